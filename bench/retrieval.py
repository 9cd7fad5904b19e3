"""Retrieval over a large catalog: how long one `retrieve()` takes, version check included.

    .venv/bin/python -m bench.retrieval [n_products]

`bench_retrieval()` creates a throw-away brand with `n_products` generated products in the
configured database, times the first query (which builds the index) and then every query of
`queries` several times over, prints p50/p99 and deletes the brand again.
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

QUERIES: tuple[str, ...] = (
    "I need a laptop for business work",
    "What is your cheapest laptop?",
    "gaming monitor 240Hz",
    "wireless mouse for travel",
    "laptop ringan untuk kerja kantor",
    "monitor murah untuk mahasiswa",
    "noise cancelling headphones",
    "4K monitor for photo editing with USB-C",
    "something for my daughter who studies design",
    "do you sell refrigerators",
)

_BRANDS = ("Lenovo", "Dell", "HP", "ASUS", "Acer", "Apple", "MSI", "Samsung", "LG", "Logitech", "Razer", "BenQ")
_KINDS = {
    "Laptop": ("business", "gaming", "student", "creative", "ultraportable", "budget", "workstation"),
    "Monitor": ("4K", "ultrawide", "gaming", "portable", "office", "curved", "QHD"),
    "Accessory": ("mouse", "keyboard", "headset", "webcam", "dock", "charger", "backpack", "stand", "SSD"),
}
_WORDS = tuple(
    " ".join(
        [
            "fast quiet lightweight durable premium affordable wireless backlit ergonomic compact bright",
            "colour-accurate long battery travel office home school video editing coding streaming calls",
            "meetings esports productivity aluminium thin slim powerful efficient reliable",
        ]
    ).split()
)


def _setup_django() -> None:
    import django
    from django.apps import apps

    if not apps.ready:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botsite.settings")
        django.setup()


def _product_rows(brand: Any, n: int, rng: random.Random) -> list[Any]:
    from flows.models import Product

    rows = []
    for number in range(n):
        category = rng.choice(list(_KINDS))
        kind = rng.choice(_KINDS[category])
        maker = rng.choice(_BRANDS)
        words = rng.sample(_WORDS, 8)
        rows.append(
            Product(
                brand=brand,
                external_id=f"bench-{number:05d}",
                name=f"{maker} {kind.title()} {category} {rng.randint(100, 999)}",
                category=category,
                description=f"A {words[0]} {kind} {category.lower()} for {words[1]} and {words[2]} use, "
                f"{words[3]} and {words[4]}.",
                price=Decimal(rng.randint(300, 40000) * 1000),
                features=[kind, words[5], words[6], words[7]],
                specifications={"series": f"{maker} {rng.randint(1, 9)}", "warranty": f"{rng.randint(1, 3)} years"},
                availability=rng.random() > 0.15,
            )
        )
    return rows


def _percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def bench_retrieval(n_products: int = 10000, queries: Sequence[str] = QUERIES, rounds: int = 30) -> dict[str, Any]:
    """Time `retrieve()` over a brand with `n_products` products; returns and prints the numbers
    (milliseconds): build (first query), p50, p99, max over len(queries) * rounds queries."""
    _setup_django()
    from conversations.generation import retrieval
    from flows.models import Brand, Product

    rng = random.Random(7)
    brand = Brand.objects.create(slug=f"bench-{uuid.uuid4().hex[:10]}", name="Bench Brand", is_active=False)
    try:
        Product.objects.bulk_create(_product_rows(brand, n_products, rng), batch_size=1000)
        retrieval.forget(brand.pk)
        started = time.perf_counter()
        retrieval.retrieve(brand.pk, queries[0])
        build_ms = (time.perf_counter() - started) * 1000
        gc.collect()  # the build's garbage would otherwise be collected inside a timed query
        samples: list[float] = []
        for _ in range(rounds):
            for query in queries:
                started = time.perf_counter()
                retrieval.retrieve(brand.pk, query)
                samples.append((time.perf_counter() - started) * 1000)
        result = {
            "name": "retrieval",
            "n_products": n_products,
            "queries": len(samples),
            "build_ms": round(build_ms, 1),
            "p50_ms": round(statistics.median(samples), 3),
            "p99_ms": round(_percentile(samples, 0.99), 3),
            "max_ms": round(max(samples), 3),
        }
    finally:
        retrieval.forget(brand.pk)
        Product.objects.filter(brand=brand).delete()
        brand.delete()
    print(
        f"retrieval over {n_products} products: first query (index build) {result['build_ms']} ms, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms "
        f"({result['queries']} queries)"
    )
    return result


if __name__ == "__main__":
    bench_retrieval(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
