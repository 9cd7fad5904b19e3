"""Settings, all from the environment.

Local defaults need nothing: SQLite in `var/`, an embedded Redis on a unix socket in `var/redis/`
(started by `manage.py runstack`). Production sets DATABASE_URL, REDIS_URL, SECRET_KEY, DEBUG=0,
ALLOWED_HOSTS.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from botsite.env import celery_url_for_db, env_bool, env_int, env_list, env_str, redis_url_for_db

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("BOTSITE_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", True)
_secret = env_str("SECRET_KEY")
if not _secret:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    _secret = "local-development-only-not-a-secret"  # noqa: S105 - refused above outside DEBUG
SECRET_KEY = _secret
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "botsite",
    "flows",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "botsite.urls"
ASGI_APPLICATION = "botsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
_database_url = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Django's SQLite backend with writers queued on a file lock (botsite/sqlite/base.py).
    DATABASES["default"]["ENGINE"] = "botsite.sqlite"
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE: a writer takes the lock at BEGIN, so two writers queue instead of failing
        # with "database is locked" when one upgrades a read lock. WAL lets readers run beside.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    _test_db = env_str("BOTSITE_TEST_DB")
    if _test_db:
        # A file, not :memory:, so that daphne subprocesses in tests see the same data.
        DATABASES["default"]["TEST"] = {"NAME": _test_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, Celery broker, cache ----------------------------------------------
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis" / "redis.sock"
REDIS_URL = env_str("REDIS_URL") or f"unix://{EMBEDDED_REDIS_SOCKET}"
# Redis pub/sub: a message to a group is one PUBLISH, and every daphne process receives it on
# the one connection it subscribed with (the list-based layer takes ~8 round trips per message);
# subscriptions are batched per process (botsite/channel_layer.py).
# Nothing is kept for a socket that is not connected, which is fine here: the message log is
# the truth and every adapter catches up from it (`?after=`, gap repair, the reply watchdog).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "botsite.channel_layer.PubSubChannelLayer",
        "CONFIG": {
            # redis-py 8 defaults to a 5 s socket timeout; the subscriber's reads wait longer.
            "hosts": [{"address": redis_url_for_db(REDIS_URL, 0), "socket_timeout": None}],
            # Pub/sub channels ignore the database number: deployments sharing one Redis server
            # keep apart by prefix.
            "prefix": env_str("CHANNEL_LAYER_PREFIX") or "botsite",
        },
    }
}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": redis_url_for_db(REDIS_URL, 2),
    }
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or celery_url_for_db(REDIS_URL, 1)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# Late acks + reject on worker loss: a task whose worker dies is delivered again; every task is
# written to be safe to run twice.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_PREFETCH", 4)
# Celery's Django fix-up closes every database connection before and after each task unless
# this is set: a new SQLite connection (its pragmas, Django's SQL functions) or PostgreSQL login
# per task, 6 % of a worker in the flow benchmark. Connections are kept as long as CONN_MAX_AGE,
# and Django's own check drops those that failed or aged; a thread pool's threads still close
# theirs after each task (botsite/celery.py).
CELERY_DB_REUSE_MAX = 2**31
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # How long an unacked task waits before the broker hands it to another worker.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 600),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Streamed answers have a queue of their own: an answer holds its task for as long as the model
# streams (seconds), mostly waiting on the network, so `make run` serves them from a thread-pool
# worker (GENERATION_THREADS answers at once) instead of the prefork children that run flow steps,
# which two long answers would otherwise keep from every assistant visitor.
# A worker started without `-Q` consumes both queues, as a single worker did before.
CELERY_TASK_DEFAULT_QUEUE = "celery"
GENERATION_QUEUE = env_str("GENERATION_QUEUE", "answers") or "answers"
CELERY_TASK_QUEUES = tuple(Queue(name, Exchange(name), routing_key=name) for name in ("celery", GENERATION_QUEUE))
CELERY_TASK_ROUTES = {"conversations.tasks.generate_answer": {"queue": GENERATION_QUEUE}}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Conversations ---------------------------------------------------------------------------
# How long a turn may sit in user_writing / ai_generating before the sweeper ends it.
TURN_STUCK_SECONDS = env_int("TURN_STUCK_SECONDS", 120)
# Idle conversations move to `timeout` after this long (0 turns it off).
TURN_IDLE_TIMEOUT_SECONDS = env_int("TURN_IDLE_TIMEOUT_SECONDS", 0)
SWEEP_INTERVAL_SECONDS = env_int("SWEEP_INTERVAL_SECONDS", 10)
# Frames above this size are refused before parsing, on every protocol.
MAX_FRAME_BYTES = env_int("MAX_FRAME_BYTES", 16 * 1024)
# Inputs a visitor may have queued before the assistant answers `busy`.
MAX_PENDING_INPUTS = env_int("MAX_PENDING_INPUTS", 8)

# Default LLM endpoint (a brand can set its own in the admin). Empty: the offline responder.
LLM_BASE_URL = env_str("LLM_BASE_URL", "") or ""
LLM_MODEL = env_str("LLM_MODEL", "") or ""
LLM_API_KEY = env_str("LLM_API_KEY", "") or ""
LLM_TIMEOUT_SECONDS = env_int("LLM_TIMEOUT_SECONDS", 30)
# Lifetime of a generation worker's heartbeat (refreshed every third of it); a redelivered task that
# finds it expired knows the first worker died mid-answer.
GENERATION_HEARTBEAT_SECONDS = env_int("GENERATION_HEARTBEAT_SECONDS", 10)
# Answers of one worker process that claim, ground or store at once (a thread pool runs many per
# process; their Python work would keep the process's streaming loop waiting for the GIL).
GENERATION_PREPARE_CONCURRENCY = env_int("GENERATION_PREPARE_CONCURRENCY", 1)
# Stream in a child process of the worker instead of on a thread of it: for a thread-pool worker,
# whose threads claim and store while its loop streams (runstack's answers workers set it).
GENERATION_STREAM_PROCESS = env_bool("GENERATION_STREAM_PROCESS", False)
# With the streaming process: the niceness the worker's own threads (Celery's, the claims,
# groundings and stores) take once that process has started at its usual priority, so that when
# a burst of answers starts and the cores are full, the pieces already streaming go first and the
# new answers wait (runstack's answers workers set 10; 0 leaves the worker as it is). A streaming
# process started again after one died is started by a lowered thread and runs lowered too.
GENERATION_WORKER_NICE = env_int("GENERATION_WORKER_NICE", 0)

# --- HTTP, static, auth ----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "conversations.protocols.sessions_api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Botsite API",
    "DESCRIPTION": "Chat sessions over HTTP + Server-Sent Events, brands and server status.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "conversations.protocols.sessions_api.add_stream_to_schema",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}

TESTING = "pytest" in sys.modules

# --- Remote AI agents (Socket.IO, docs/agents.md) -----------------------------------------------
# Browser origins allowed to open /socket.io/ (`*` wildcards; `*` alone: any). No Origin: allowed.
AGENT_ALLOWED_ORIGINS = env_list(
    "AGENT_ALLOWED_ORIGINS",
    ["http://localhost:*", "http://127.0.0.1:*", "https://localhost:*", "https://127.0.0.1:*"],
)
AGENT_REQUESTS_PER_MINUTE = env_int("AGENT_REQUESTS_PER_MINUTE", 120)  # per socket
AGENT_MAX_VALUE_CHARS = env_int("AGENT_MAX_VALUE_CHARS", 10_000)
AGENT_SUMMARY_INTERVAL_SECONDS = env_int("AGENT_SUMMARY_INTERVAL_SECONDS", 5)
# conversations.agents is not an app of its own, so autodiscovery does not find its tasks.
CELERY_IMPORTS = ["conversations.agents.tasks"]

CELERY_BEAT_SCHEDULE = {
    "sweep-turns": {"task": "conversations.tasks.sweep_turns", "schedule": float(SWEEP_INTERVAL_SECONDS)},
    "agent-summaries": {
        "task": "conversations.agents.tasks.send_agent_summaries",
        "schedule": float(AGENT_SUMMARY_INTERVAL_SECONDS),
    },
}
