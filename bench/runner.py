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
    """`python -m bench.client CONFIG` with a pipe both ways (idle mode waits for a line)."""

    def __init__(self, cfg: dict[str, Any], module: str = "bench.client") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, json.dumps(cfg)],
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
        stdout, _ = self.process.communicate("go\n")
        if self.process.returncode != 0:
            raise RuntimeError(f"the client exited with {self.process.returncode}")
        return dict(json.loads(stdout.strip().splitlines()[-1]))


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
