"""`manage.py runstack`: everything `make run` starts, under one supervisor.

Embedded Redis (when REDIS_URL is unset), migrations and demo data, then daphne, a Celery worker
for flow steps (prefork), one for streamed answers (threads) and Celery beat as child processes.
A child that dies is restarted; Ctrl-C stops them all.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from botsite import embedded_redis


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    pass_fds: tuple[int, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.args, env={**env, **self.extra_env}, pass_fds=self.pass_fds)


LISTEN_BACKLOG = 4096


class Command(BaseCommand):
    help = "Run embedded Redis (if REDIS_URL is unset), daphne, Celery workers for flows and answers, and beat."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--concurrency", type=int, default=int(os.environ.get("CELERY_CONCURRENCY", "2")))
        parser.add_argument(
            "--pool", default=os.environ.get("CELERY_POOL", "prefork"), help="Celery pool: prefork (default) or threads"
        )
        parser.add_argument(
            "--web-processes",
            type=int,
            default=int(os.environ.get("WEB_PROCESSES", "1")),
            help="daphne processes sharing the port (Socket.IO's polling transport then needs sticky sessions)",
        )
        parser.add_argument(
            "--answer-workers",
            type=int,
            default=int(os.environ.get("GENERATION_WORKERS", "1")),
            help="thread-pool workers for streamed answers (0: the flow worker's children run them too)",
        )
        parser.add_argument(
            "--answer-threads",
            type=int,
            default=int(os.environ.get("GENERATION_THREADS", "100")),
            help="answers each of them streams at once",
        )
        parser.add_argument("--no-demo", action="store_true", help="Do not load demo data.")
        parser.add_argument("--no-beat", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        redis_process = None
        env = dict(os.environ)
        if not os.environ.get("REDIS_URL"):
            redis_process = embedded_redis.start(settings.EMBEDDED_REDIS_SOCKET)
            env["REDIS_URL"] = settings.REDIS_URL
            self.stdout.write(f"embedded Redis on {settings.EMBEDDED_REDIS_SOCKET}")
        call_command("migrate", interactive=False, verbosity=0)
        if not options["no_demo"]:
            call_command("load_demo", stdout=self.stdout)
        python = sys.executable
        log_level = os.environ.get("LOG_LEVEL", "INFO")
        celery = [python, "-m", "celery", "-A", "botsite"]
        # The listening socket is ours, not daphne's: its backlog holds a burst of new visitors
        # (daphne's own is 50: past it, connections wait for SYN retries of 1, 3, 7 s), it stays
        # open while a daphne that died is restarted, and several daphne processes can share it.
        # (daphne adopts IPv4 sockets only; an IPv6 host gets one daphne binding it itself.)
        pass_fds: tuple[int, ...]
        if ":" in options["host"]:
            bind, pass_fds, processes = ["-b", options["host"], "-p", str(options["port"])], (), 1
        else:
            listener = socket.create_server((options["host"], options["port"]), backlog=LISTEN_BACKLOG)
            listener.set_inheritable(True)
            bind, pass_fds = ["--fd", str(listener.fileno())], (listener.fileno(),)
            processes = max(1, options["web_processes"])
        # daphne's 5 s handshake timeout drops visitors during a burst of connections; they
        # should wait a little instead.
        # daphne writes an access-log line per request and WebSocket connect and disconnect at
        # its default verbosity; quieter LOG_LEVELs turn that off with the rest of its INFO.
        verbosity = ["-v", "1" if logging.getLevelName(log_level.upper()) in (logging.DEBUG, logging.INFO) else "0"]
        daphne = [python, "-m", "botsite.daphne_main", *bind, *verbosity, "--proxy-headers",
                  "--websocket_connect_timeout", "30", "botsite.asgi:application"]  # fmt: skip
        children = [
            Child("daphne" if processes == 1 else f"daphne-{index}", daphne, pass_fds=pass_fds)
            for index in range(processes)
        ]
        # Gossip, mingle and heartbeats serve monitoring tools; here they only cost CPU.
        quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        answer_workers = max(0, options["answer_workers"])
        flow_queues = settings.CELERY_TASK_DEFAULT_QUEUE
        if not answer_workers:
            flow_queues += f",{settings.GENERATION_QUEUE}"
        children.append(
            Child("worker", [*celery, "worker", "--loglevel", log_level, "--concurrency", str(options["concurrency"]),
                             "--pool", options["pool"], "-Q", flow_queues, "-n", f"worker-{os.getpid()}@%h", *quiet])
        )  # fmt: skip
        # An answer mostly waits on the model: threads, many per process, all streaming on the
        # process's one event loop (conversations/generation/relay.py), which runs in a child
        # process of its own (streamer.py) unless GENERATION_STREAM_PROCESS says otherwise. Each
        # process takes only as many answers as it has threads, so that several share a burst.
        # Its own threads then step back (GENERATION_WORKER_NICE): in a burst of new answers the
        # pieces already streaming go first.
        stream_process = {
            "GENERATION_STREAM_PROCESS": os.environ.get("GENERATION_STREAM_PROCESS", "1"),
            "GENERATION_WORKER_NICE": os.environ.get("GENERATION_WORKER_NICE", "10"),
        }
        children += [
            Child("answers" if answer_workers == 1 else f"answers-{index}",
                  [*celery, "worker", "--loglevel", log_level, "--concurrency", str(max(1, options["answer_threads"])),
                   "--pool", "threads", "--prefetch-multiplier", "1", "-Q", settings.GENERATION_QUEUE,
                   "-n", f"answers-{index}-{os.getpid()}@%h", *quiet], extra_env=stream_process)
            for index in range(answer_workers)
        ]  # fmt: skip
        if not options["no_beat"]:
            children.append(
                Child("beat", [*celery, "beat", "--loglevel", log_level, "--schedule",
                               settings.CELERY_BEAT_SCHEDULE_FILENAME])
            )  # fmt: skip
        stopping = False

        def request_stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        for child in children:
            child.start(env)
        host = "localhost" if options["host"] in {"127.0.0.1", "0.0.0.0"} else options["host"]  # noqa: S104
        self.stdout.write(
            self.style.SUCCESS(
                f"\nBotsite is running at http://{host}:{options['port']}/  (admin: /admin/, Ctrl-C stops)\n"
                f"  assistant:  ws://{host}:{options['port']}/ws/assistant/techpro/\n"
            )
        )
        try:
            while not stopping:
                time.sleep(0.5)
                for child in children:
                    if child.process and child.process.poll() is not None and not stopping:
                        now = time.monotonic()
                        child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                        if len(child.restarts) > 5:
                            self.stderr.write(f"{child.name} keeps dying; stopping everything")
                            stopping = True
                            break
                        self.stderr.write(f"{child.name} exited with {child.process.returncode}; restarting")
                        child.start(env)
        finally:
            for child in children:
                if child.process and child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for child in children:
                if child.process:
                    try:
                        child.process.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        child.process.kill()
            embedded_redis.stop(redis_process)
            self.stdout.write("stopped")
