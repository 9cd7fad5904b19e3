import functools

import redis.utils

from botsite.celery import app as celery_app

# redis-py 8 reads its own version from the package metadata (an email-header parse) for every
# new connection; under a burst of handshakes that showed up in profiles. The answer never changes.
redis.utils.get_lib_version = functools.cache(redis.utils.get_lib_version)

__all__ = ["celery_app"]
