"""`make bench` / `python -m bench`: how fast the stack is, measured from outside.

    python -m bench                          # everything, on a stack of its own
    python -m bench --only flow --flow 100:0 # one part, one size
    python -m bench --url http://127.0.0.1:8000 --only flow
    python -m bench --soak 600               # 1,000 conversations cycling for ten minutes

The server is `manage.py runstack` started in a throw-away folder on a free loopback port (or the
stack at `--url`, loopback only); the clients run in a separate process (bench/client.py).
Results: one table on stdout and a JSON file in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.calibrate import reference_cpu_ms
from bench.client import STEPS_PER_CONVERSATION
from bench.runner import ClientProcess, run_client
from bench.stack import NotLoopback, ServerWatch, Stack, attach_stack, require_loopback, start_stack

RESULTS = Path(__file__).resolve().parent / "results"


def parse_scenarios(text: str) -> list[tuple[int, float]]:
    """`100:0,1000:500` → [(100, 0.0), (1000, 0.5)]: N conversations and think time in ms."""
    scenarios = []
    for item in text.split(","):
        n, _, think = item.partition(":")
        scenarios.append((int(n), float(think or 0) / 1000))
    return scenarios


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="use the stack already running here (loopback only)")
    parser.add_argument(
        "--only",
        default="flow,stream,idle,retrieval,writers",
        help="comma-separated parts: flow, stream, idle, retrieval, writers (default: all)",
    )
    parser.add_argument(
        "--flow",
        default="100:0,1000:500,5000:500",
        help="flow scenarios N:think_ms, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--stream", default="10,100", help="concurrent streamed answers (default: %(default)s)")
    parser.add_argument("--stream-tokens", type=int, default=200, help="tokens per streamed answer")
    parser.add_argument("--stream-rate", type=float, default=50.0, help="tokens per second per stream")
    parser.add_argument(
        "--stream-pool",
        choices=["threads", "prefork"],
        default="threads",
        help="who streams the answers: the stack's answers worker (threads, every answer at once) or, without it, "
        "the flow worker's prefork children",
    )
    parser.add_argument("--idle", default="1000,10000", help="idle sockets to hold (default: %(default)s)")
    parser.add_argument("--products", type=int, default=10_000, help="catalog size for retrieval")
    parser.add_argument(
        "--soak", type=int, default=0, metavar="SECONDS", help="only the soak: 1,000 conversations cycling for SECONDS"
    )
    parser.add_argument("--soak-n", type=int, default=1000)
    parser.add_argument("--soak-think", type=float, default=500, help="think time in ms during the soak")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker processes of the stack")
    parser.add_argument("--database-url", help="run the stack on this database (default: a fresh SQLite file)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a client waits for one answer")
    parser.add_argument("--ramp-rate", type=float, default=500, help="new connections per second")
    parser.add_argument(
        "--settings",
        default="botsite.settings",
        help="settings module of the stack; `tuned`: proposed changes (bench/*_settings.py)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the stack (e.g. CELERY_PREFETCH=1), repeatable",
    )
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs, database)")
    parser.add_argument(
        "--profile",
        metavar="SECONDS",
        type=float,
        default=0,
        help="py-spy record daphne and the workers for the first SECONDS of each flow run",
    )
    return parser.parse_args(argv)


class Stacks:
    """A fresh stack per part (so one part's heap does not flatter the next), or the given one."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.current: Stack | None = None

    def settings_module(self) -> str:
        named = {"tuned": "bench.tuned_settings"}
        return named.get(self.args.settings, self.args.settings)

    def fresh(self, extra_env: dict[str, str] | None = None, concurrency: int | None = None) -> Stack:
        if self.args.url:
            if self.current is None:
                self.current = attach_stack(self.args.url)
            return self.current
        self.close()
        env = dict(item.split("=", 1) for item in self.args.env)
        env["DJANGO_SETTINGS_MODULE"] = self.settings_module()
        env.update(extra_env or {})
        workers = concurrency or self.args.concurrency
        print(f"  starting a stack (runstack, {workers} workers) …", file=sys.stderr, flush=True)
        self.current = start_stack(concurrency=workers, extra_env=env, database_url=self.args.database_url)
        return self.current

    def close(self) -> None:
        if self.current is not None and not self.args.url:
            self.current.stop(keep=self.args.keep)
            if self.args.keep and self.current.var_dir:
                print(f"  kept {self.current.var_dir.parent}", file=sys.stderr)
        self.current = None


def bench_flow(stacks: Stacks, args: argparse.Namespace) -> list[dict[str, Any]]:
    from bench.profile import Profiler

    results = []
    stack = stacks.fresh()
    for n, think in parse_scenarios(args.flow):
        print(f"  flow: {n} conversations, think {think * 1000:.0f} ms …", file=sys.stderr, flush=True)
        watch = ServerWatch(stack.root_pids).start()
        profiler = Profiler.start(watch, args.profile, label=f"flow-{n}") if args.profile else None
        result = run_client(
            {
                "mode": "flow",
                "url": stack.ws_url,
                "n": n,
                "think": think,
                "timeout": args.timeout,
                "ramp_rate": args.ramp_rate,
            }
        )
        server = watch.stop()
        if profiler:
            result["profiles"] = profiler.wait()
        result["server"] = server
        result["cpu_ms_per_step"] = round(server["cpu_s"] * 1000 / result["steps"], 3) if result["steps"] else None
        results.append(result)
        time.sleep(1)
    return results


def bench_idle(stacks: Stacks, args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for n in [int(x) for x in args.idle.split(",") if x]:
        stack = stacks.fresh()
        print(f"  idle: {n} open sockets …", file=sys.stderr, flush=True)
        # Warm up first: the first connections import and allocate what every later one reuses.
        run_client(
            {
                "mode": "flow",
                "url": stack.ws_url,
                "n": 100,
                "think": 0,
                "timeout": args.timeout,
                "ramp_rate": args.ramp_rate,
            }
        )
        time.sleep(2)
        watch = ServerWatch(stack.root_pids).start()
        before = {role: watch.rss_of(role) for role in ("daphne", "redis", "worker-child", "worker-main")}
        client = ClientProcess({"mode": "idle", "url": stack.ws_url, "n": n, "timeout": args.timeout})
        ready = client.wait_line()
        time.sleep(3)  # let the workers finish the flows' first steps
        server = watch.stop()
        after = {role: watch.rss_of(role) for role in before}
        result = client.finish()
        result["ready"] = ready
        result["rss_delta_kib"] = {role: round((after[role] - before[role]) / 1024) for role in before}
        result["daphne_kib_per_socket"] = round((after["daphne"] - before["daphne"]) / 1024 / max(1, result["open"]), 2)
        result["redis_kib_per_socket"] = round((after["redis"] - before["redis"]) / 1024 / max(1, result["open"]), 2)
        # What opening a socket costs: the handshake, the conversation's row and its flow's start.
        result["server"] = server
        result["cpu_ms_per_socket"] = {
            role: round(stats["cpu_s"] * 1000 / max(1, result["open"]), 3)
            for role, stats in server["by_role"].items()
            if stats["cpu_s"]
        }
        results.append(result)
    return results


def bench_retrieval(args: argparse.Namespace) -> dict[str, Any]:
    from bench.runner import run_retrieval

    print(f"  retrieval over {args.products} products …", file=sys.stderr, flush=True)
    return run_retrieval(args.products)


def bench_writers() -> list[dict[str, Any]]:
    from bench.sqlite_lock import run_writers

    print("  SQLite writers waiting for each other …", file=sys.stderr, flush=True)
    return run_writers()


def bench_stream(stacks: Stacks, args: argparse.Namespace) -> list[dict[str, Any]]:
    from bench.streaming import run_streaming

    return run_streaming(stacks, args)


def bench_soak(stacks: Stacks, args: argparse.Namespace) -> dict[str, Any]:
    stack = stacks.fresh()
    print(f"  soak: {args.soak_n} conversations cycling for {args.soak} s …", file=sys.stderr, flush=True)
    watch = ServerWatch(stack.root_pids, interval=5.0, keep_series=True).start()
    result = run_client(
        {
            "mode": "soak",
            "url": stack.ws_url,
            "n": args.soak_n,
            "think": args.soak_think / 1000,
            "timeout": args.timeout,
            "ramp_rate": args.ramp_rate,
            "duration": args.soak,
        }
    )
    server = watch.stop()
    result["server"] = server
    result["cpu_ms_per_step"] = round(server["cpu_s"] * 1000 / result["steps"], 3) if result["steps"] else None
    result["memory"] = report.memory_slopes(watch, warmup=max(60.0, args.soak * 0.2))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.url:
        try:
            require_loopback(args.url)
        except NotLoopback as exc:
            print(f"refusing to run: {exc}", file=sys.stderr)
            return 2
    parts = ["soak"] if args.soak else [p.strip() for p in args.only.split(",") if p.strip()]
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": _cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "reference_cpu_ms_before": reference_cpu_ms(),
        },
        "steps_per_conversation": STEPS_PER_CONVERSATION,
        "options": vars(args),
    }
    stacks = Stacks(args)
    try:
        for part in parts:
            if part == "flow":
                results["flow"] = bench_flow(stacks, args)
            elif part == "idle":
                results["idle"] = bench_idle(stacks, args)
            elif part == "retrieval":
                results["retrieval"] = bench_retrieval(args)
            elif part == "writers":
                results["writers"] = bench_writers()
            elif part == "stream":
                results["stream"] = bench_stream(stacks, args)
            elif part == "soak":
                results["soak"] = bench_soak(stacks, args)
            else:
                print(f"unknown part {part!r}", file=sys.stderr)
                return 2
    finally:
        stacks.close()
    results["machine"]["reference_cpu_ms_after"] = reference_cpu_ms()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(report.table(results))
    print(f"\nresults: {path}")
    return 0


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
