"""The benchmark: `make bench` (see bench/__main__.py and docs/performance.md)."""
