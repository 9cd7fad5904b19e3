"""Measured-only experiments (`python -m bench --settings inline`): a Django app whose `ready()`
applies a proposed change to the hot path by patching, so its effect can be measured before the
real code is changed. Never installed outside the benchmark."""
