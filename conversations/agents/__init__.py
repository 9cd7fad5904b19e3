"""Remote AI agents (the Socket.IO protocol's domain side).

kinds.py     agent kinds behind a registry, each with a typed configuration
wire.py      the seed's `auth`, `request` and `end` payloads, parsed and validated
services.py  engagements: open, record an exchange, end, periodic summaries
emit.py      emitting to a user's room from any process (daphne or a Celery worker)
tasks.py     the beat task that sends the periodic summaries
"""
