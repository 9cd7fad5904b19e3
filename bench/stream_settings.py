"""Settings of the streaming part's stack: the chosen settings plus a Celery thread pool.

With `runstack --concurrency M` the worker then runs M answers at once in one process, so M
streams really are concurrent (M prefork children would cost ~100 MiB each). Only the benchmark
uses this.
"""

import importlib
import os

_base = importlib.import_module(os.environ.get("BENCH_BASE_SETTINGS", "botsite.settings"))
globals().update({name: value for name, value in vars(_base).items() if name.isupper()})

CELERY_WORKER_POOL = "threads"

# `--env STREAM_DELIVERY_INTERVAL=0.005`: try another pacing of the worker's stream deliveries.
if "STREAM_DELIVERY_INTERVAL" in os.environ:
    STREAM_DELIVERY_INTERVAL = float(os.environ["STREAM_DELIVERY_INTERVAL"])

# `--env BENCH_STREAM_FAST=1`: measure the proposals of bench/experiments/streaming.py.
if os.environ.get("BENCH_STREAM_FAST") == "1":
    INSTALLED_APPS = [*INSTALLED_APPS, "bench.experiments.streaming.StreamFastPathConfig"]  # noqa: F821

# Set by the streaming part: the worker writes down when it emits each piece (bench/emit_log.py).
if os.environ.get("BENCH_EMIT_LOG"):
    INSTALLED_APPS = [*INSTALLED_APPS, "bench.emit_log.EmitLogConfig"]
