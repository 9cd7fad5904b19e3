"""Settings of the streaming part's stack: the chosen settings plus the benchmark's emit log.

The stack is otherwise what `make run` starts (its answers worker streams every answer at once).
Only the benchmark uses this.
"""

import importlib
import os

_base = importlib.import_module(os.environ.get("BENCH_BASE_SETTINGS", "botsite.settings"))
globals().update({name: value for name, value in vars(_base).items() if name.isupper()})

# `--env STREAM_DELIVERY_INTERVAL=0.005`: try another pacing of the worker's stream deliveries.
if "STREAM_DELIVERY_INTERVAL" in os.environ:
    STREAM_DELIVERY_INTERVAL = float(os.environ["STREAM_DELIVERY_INTERVAL"])

# `--env BENCH_STREAM_FAST=1`: measure the proposals of bench/experiments/streaming.py.
if os.environ.get("BENCH_STREAM_FAST") == "1":
    INSTALLED_APPS = [*INSTALLED_APPS, "bench.experiments.streaming.StreamFastPathConfig"]  # noqa: F821

# Set by the streaming part: the worker writes down when it emits each piece (bench/emit_log.py).
if os.environ.get("BENCH_EMIT_LOG"):
    INSTALLED_APPS = [*INSTALLED_APPS, "bench.emit_log.EmitLogConfig"]
