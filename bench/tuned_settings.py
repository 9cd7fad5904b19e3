"""Settings for measuring proposed changes without editing botsite/settings.py.

`python -m bench --settings tuned` runs the stack with these; docs/performance.md records what
each change is worth. Nothing here is used outside the benchmark.
"""

from botsite.settings import *  # noqa: F403
from botsite.settings import DATABASES

# DEBUG keeps every SQL statement (CursorDebugWrapper, quoted params) in memory per connection.
DEBUG = False
# SQLite: keep each thread's connection instead of connecting (and running the PRAGMAs) per
# request and per task.
if DATABASES["default"]["ENGINE"] == "botsite.sqlite":
    DATABASES["default"]["CONN_MAX_AGE"] = None
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
