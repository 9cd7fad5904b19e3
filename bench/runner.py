"""Running the client process and the in-process retrieval measurement."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class ClientProcess:
    """`python -m bench.client CONFIG` with a pipe both ways (idle mode waits for a line). The
    final result comes back in a file, not on stdout: a result of several hundred KiB (20,000
    chunk times) came back cut at the pipe's 64 KiB now and then."""

    def __init__(self, cfg: dict[str, Any], module: str = "bench.client") -> None:
        handle, name = tempfile.mkstemp(prefix="botsite-bench-result-", suffix=".json")
        os.close(handle)
        self.result_path = Path(name)
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, json.dumps({**cfg, "result_path": name})],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the client exited with {self.process.wait()} before answering")
        return dict(json.loads(line))

    def finish(self) -> dict[str, Any]:
        try:
            self.process.communicate("go\n")
            if self.process.returncode != 0:
                raise RuntimeError(f"the client exited with {self.process.returncode}")
            return dict(json.loads(self.result_path.read_text(encoding="utf-8")))
        finally:
            self.result_path.unlink(missing_ok=True)


def write_result(cfg: dict[str, Any], result: dict[str, Any]) -> None:
    """The client's side: its result into the file the runner named (written whole, then renamed)."""
    path = Path(cfg["result_path"])
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(result), encoding="utf-8")
    partial.replace(path)


def run_client(cfg: dict[str, Any], module: str = "bench.client") -> dict[str, Any]:
    return ClientProcess(cfg, module).finish()


def run_retrieval(n_products: int) -> dict[str, Any]:
    """bench/retrieval.py's bench_retrieval, in a child process on a database of its own."""
    if not (ROOT / "bench" / "retrieval.py").exists():
        return {"available": False, "reason": "bench/retrieval.py is not there yet"}
    run_dir = Path(tempfile.mkdtemp(prefix="botsite-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(BOTSITE_VAR_DIR=str(run_dir / "var"), DJANGO_SETTINGS_MODULE="botsite.settings")
    (run_dir / "var").mkdir()
    code = (
        "import json, django; django.setup()\n"
        "from bench.retrieval import bench_retrieval\n"
        f"print(json.dumps(bench_retrieval(n_products={int(n_products)})))\n"
    )
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if done.returncode != 0:
        return {"available": True, "error": done.stderr[-2000:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"available": True, **result}
