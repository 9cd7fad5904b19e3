"""How fast this machine runs Python right now, so that results from different machines (and
from one machine whose speed drifts) can be compared.

Machines of the same kind differ: the same code measured 0.83-0.90 ms of CPU per flow step on
one 2-core machine and 1.0-1.2 on another, where retrieval also ran three to four times
slower, and one machine's speed drifts by a quarter within minutes. The benchmark runs this
before and after its parts and records both.
"""

from __future__ import annotations

import json
import time

# A fixed mix of what the stack spends its time on: dicts, strings, JSON, small objects.
_DOCUMENT = {
    "kind": "ChoiceRequest",
    "groupId": "lang",
    "choices": [{"itemId": f"c{i}", "content": "x" * i} for i in range(8)],
}


def reference_cpu_ms(rounds: int = 20_000) -> float:
    """CPU milliseconds of a fixed pure-Python workload: smaller is faster."""
    started = time.process_time()
    total = 0
    for index in range(rounds):
        text = json.dumps(_DOCUMENT)
        parsed = json.loads(text)
        key = f"{parsed['groupId']}:{index % 97}"
        total += len(key) + sum(len(choice["content"]) for choice in parsed["choices"])
    assert total > 0
    return round((time.process_time() - started) * 1000, 1)
