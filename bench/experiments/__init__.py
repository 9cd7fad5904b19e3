"""Measured-only experiments (`--env BENCH_STREAM_FAST=1`): a Django app whose `ready()`
applies a proposed change to the hot path by patching, so its effect can be measured before the
real code is changed. Never installed outside the benchmark."""
