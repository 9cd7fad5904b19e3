"""The one table the benchmark prints, and the soak's memory slopes."""

from __future__ import annotations

from typing import Any

from bench.stack import ServerWatch

# The columns of a latency distribution, in the order the tables show them.
PERCENTILES = ("p50", "p90", "p99", "max")

TARGETS = {
    "cpu_ms_per_step": 1.0,
    "p99_ms_at_1000_think_500": 100.0,
    "chunk_p99_ms_at_100": 5.0,
    "kib_per_idle_socket": 25.0,
    "retrieval_p99_ms": 5.0,
}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _rows(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[_fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _peaks(server: dict[str, Any]) -> str:
    roles = server.get("by_role", {})
    short = {"daphne": "d", "worker-child": "wc", "worker-main": "wm", "answers": "a", "streamer": "s", "redis": "r"}
    return " ".join(f"{short[r]}{roles[r]['peak_rss_mib']:.0f}" for r in short if r in roles)


def _cpu_per_socket(by_role: dict[str, float] | None) -> str:
    if not by_role:
        return "-"
    parts = [f"{role} {ms:.2f}" for role, ms in sorted(by_role.items(), key=lambda item: -item[1]) if ms >= 0.01]
    return f"{sum(by_role.values()):.2f} (" + ", ".join(parts) + ")"


def table(results: dict[str, Any]) -> str:
    out: list[str] = []
    machine = results.get("machine", {})
    if "reference_cpu_ms_before" in machine:
        out.append(
            f"machine: {machine['cpus']} CPUs, Python {machine['python']}; reference workload "
            f"{machine['reference_cpu_ms_before']} ms CPU before, {machine.get('reference_cpu_ms_after', '-')} after "
            "(bench/calibrate.py; smaller is faster)"
        )
    if results.get("flow"):
        out.append("\nflow steps (/ws/assistant/techpro/, the demo language flow; latency: answer → next request)")
        rows = []
        for r in results["flow"]:
            lat = r["step_latency_ms"]
            rows.append(
                [
                    r["n"],
                    f"{r['think_ms']:.0f}",
                    r["completed"],
                    r["errors"],
                    r["steps_per_s"],
                    lat["p50"],
                    lat["p90"],
                    lat["p99"],
                    lat["max"],
                    f"{r['cpu_ms_per_step']:.3f}" if r["cpu_ms_per_step"] is not None else "-",
                    _peaks(r["server"]),
                ]
            )
        out.append(
            _rows(
                [
                    "N",
                    "think ms",
                    "done",
                    "errors",
                    "steps/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "CPU ms/step",
                    "peak RSS MiB (d=daphne wc=worker child wm=worker main a=answers s=its streamer r=redis)",
                ],
                rows,
            )
        )
    if results.get("stream"):
        out.append("\nstreaming (loopback OpenAI-compatible model)")
        rows = []
        for r in results["stream"]:
            if not r.get("available", True):
                rows.append([r.get("m", "-"), r.get("reason", "not available"), *[""] * 11])
                continue
            rows.append(
                [
                    r["m"],
                    r["completed"],
                    r["errors"],
                    r["ttft_overhead_ms"]["p50"],
                    r["ttft_overhead_ms"]["p99"],
                    r["chunk_ms"]["p50"],
                    r["chunk_ms"]["p99"],
                    *_first_and_worst_other_second(r.get("chunk_ms_by_second") or []),
                    r.get("model_to_client_ms", r["chunk_ms"])["p99"],
                    "yes" if r["all_match_db"] else "NO",
                    r.get("server_cpu_ms_per_token"),
                    f"{r.get('rate', '-')}/s, {r.get('workers', '-')}",
                ]
            )
        out.append(
            _rows(
                [
                    "M",
                    "done",
                    "errors",
                    "TTFT-model p50",
                    "TTFT-model p99",
                    "chunk p50 ms",
                    "chunk p99 ms",
                    "p99 1st s",
                    "p99 worst other s",
                    "model→client p99",
                    "all == stored",
                    "CPU ms/token",
                    "tokens/s per stream, workers",
                ],
                rows,
            )
        )
    if results.get("idle"):
        out.append("\nidle assistant sockets (RSS delta / open sockets)")
        rows = [
            [
                r["n"],
                r["open"],
                r["errors"],
                r["daphne_kib_per_socket"],
                r["redis_kib_per_socket"],
                r["rss_delta_kib"].get("worker-child"),
                _cpu_per_socket(r.get("cpu_ms_per_socket")),
            ]
            for r in results["idle"]
        ]
        headers = ["N", "open", "errors", "daphne KiB/socket", "redis KiB/socket", "workers Δ KiB"]
        out.append(_rows([*headers, "CPU ms/socket opened (handshake + flow start)"], rows))
    if results.get("retrieval"):
        r = results["retrieval"]
        out.append("\nretrieval")
        if not r.get("available") or r.get("error"):
            out.append(f"  not measured: {r.get('reason') or r.get('error', '')[-300:]}")
        else:
            shown = {k: v for k, v in r.items() if k != "available" and not isinstance(v, dict | list)}
            out.append("  " + ", ".join(f"{k}={_fmt(v, 2)}" for k, v in shown.items()))
    if results.get("writers"):
        out.append("\nSQLite writers taking turns (bench/sqlite_lock.py; wait: asking for the lock -> holding it)")
        rows = [
            [r["waiting"], r["writers"], r["hold_ms"], r["commits"], *(r["wait_ms"][k] for k in PERCENTILES)]
            for r in results["writers"]
        ]
        out.append(_rows(["waiting in", "writers", "hold ms", "commits", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows))
    if results.get("soak"):
        r = results["soak"]
        lat = r["step_latency_ms"]
        out.append(f"\nsoak: {r['n']} conversations cycling, think {r['think_ms']:.0f} ms, {r['wall_s']} s")
        out.append(
            f"  completed {r['completed']}, errors {r['errors']}, steps/s {r['steps_per_s']}, "
            f"p50/p99/max {lat['p50']}/{lat['p99']}/{lat['max']} ms, CPU {r['cpu_ms_per_step']} ms/step"
        )
        rows = [
            [m["role"], m["pid"], m["rss_start_mib"], m["rss_end_mib"], m["slope_mib_per_hour"]] for m in r["memory"]
        ]
        out.append(_rows(["process", "pid", "RSS after warm-up MiB", "RSS end MiB", "slope MiB/h"], rows))
    return "\n".join(out)


def memory_slopes(watch: ServerWatch, warmup: float) -> list[dict[str, Any]]:
    """Least-squares slope of each process's RSS after the warm-up, in MiB per hour."""
    slopes = []
    for stats in watch.stats.values():
        points = [(t, rss / 2**20) for t, rss in stats.samples if t >= warmup]
        if len(points) < 3:
            continue
        mean_t = sum(t for t, _ in points) / len(points)
        mean_m = sum(m for _, m in points) / len(points)
        var = sum((t - mean_t) ** 2 for t, _ in points)
        slope = sum((t - mean_t) * (m - mean_m) for t, m in points) / var if var else 0.0
        slopes.append(
            {
                "role": stats.role,
                "pid": stats.pid,
                "rss_start_mib": round(points[0][1], 1),
                "rss_end_mib": round(points[-1][1], 1),
                "slope_mib_per_hour": round(slope * 3600, 2),
                # The whole run, one point per SERIES_STEP seconds: a step and a steady climb
                # give the same slope; the series tells them apart.
                "rss_mib_series": _thinned([(t, rss / 2**20) for t, rss in stats.samples]),
            }
        )
    return sorted(slopes, key=lambda s: (s["role"], s["pid"]))


SERIES_STEP = 10.0


def _thinned(points: list[tuple[float, float]]) -> list[list[float]]:
    """The first point of every SERIES_STEP seconds, rounded."""
    kept: list[list[float]] = []
    for t, mib in points:
        if not kept or t - kept[-1][0] >= SERIES_STEP:
            kept.append([round(t, 1), round(mib, 2)])
    return kept


def _first_and_worst_other_second(seconds: list[dict[str, Any]]) -> list[Any]:
    """Chunk p99 in the second the answers start, and in the worst second after it: a burst of
    starts and a machine that is slow throughout look the same in the run's p99."""
    if not seconds:
        return ["-", "-"]
    others = [second["p99"] for second in seconds[1:] if second["count"] >= 100]
    return [seconds[0]["p99"], max(others) if others else "-"]
