"""bench.tuned_settings plus the inline-flow experiment (bench/experiments/apps.py)."""

from bench.tuned_settings import *  # noqa: F403
from bench.tuned_settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.experiments.apps.InlineFlowConfig"]
