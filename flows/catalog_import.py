"""Importing a brand's products from CSV or JSON, in the seed's product fields.

JSON: a list of the seed's product objects (or `{"products": [...]}`). CSV: a header row with
`id, name, description, category, price, features, specifications, availability`; `features` is
a JSON list or items separated by `;` or `|`, `specifications` a JSON object or `key: value`
pairs separated by `;`, `availability` true/false/yes/no/1/0 (blank: true).

A product is matched by its `id` within the brand: existing ones are updated, new ones created.
The whole file is checked first; one bad row and nothing changes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from flows.models import Brand, Product

FIELDS = ("id", "name", "description", "category", "price", "features", "specifications", "availability")
TRUE, FALSE = {"true", "yes", "y", "1", "available", "in stock"}, {"false", "no", "n", "0", "unavailable", "sold out"}


class ImportInvalid(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.created} created, {self.updated} updated"


@dataclass(frozen=True)
class ProductRow:
    external_id: str
    name: str
    description: str
    category: str
    price: Decimal
    features: list[str]
    specifications: dict[str, Any]
    availability: bool


# --- Reading files -----------------------------------------------------------------------------


def read_rows(content: str | bytes, filename: str = "") -> list[dict[str, Any]]:
    """Raw product dicts from a CSV or JSON file (chosen by extension, else by content)."""
    if isinstance(content, bytes):
        try:
            content = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ImportInvalid(["the file is not UTF-8 text"]) from None
    content = content.lstrip("\ufeff")
    is_json = filename.lower().endswith(".json") or (not filename.lower().endswith(".csv")
                                                     and content.lstrip()[:1] in ("[", "{"))  # fmt: skip
    if is_json:
        try:
            data = json.loads(content)
        except ValueError as exc:
            raise ImportInvalid([f"invalid JSON: {exc}"]) from None
        if isinstance(data, dict) and isinstance(data.get("products"), list):
            data = data["products"]
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise ImportInvalid(['JSON must be a list of product objects (or {"products": [...]})'])
        return data
    reader = csv.DictReader(io.StringIO(content))
    if not reader.fieldnames or "id" not in reader.fieldnames or "name" not in reader.fieldnames:
        raise ImportInvalid(["CSV needs a header row with at least `id` and `name`"])
    return [dict(row) for row in reader]


def _features(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    text = str(value).strip()
    if text.startswith("["):
        parsed = json.loads(text)
        if not isinstance(parsed, list):
            raise ValueError("features must be a list")
        return _features(parsed)
    separator = ";" if ";" in text else "|"
    return [item.strip() for item in text.split(separator) if item.strip()]


def _specifications(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(key): item for key, item in value.items()}
    text = str(value).strip()
    if text.startswith("{"):
        parsed = json.loads(text)
        if not isinstance(parsed, dict):
            raise ValueError("specifications must be an object")
        return parsed
    specifications: dict[str, Any] = {}
    for pair in text.split(";"):
        if not pair.strip():
            continue
        key, separator, item = pair.partition(":")
        if not separator or not key.strip():
            raise ValueError(f"specification {pair.strip()!r} is not `key: value`")
        specifications[key.strip()] = item.strip()
    return specifications


def _availability(value: Any) -> bool:
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValueError(f"availability {value!r} is not true/false")


def _price(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("price must be a number")
    text = str(value if value is not None else "0").strip().replace("_", "")
    try:
        price = Decimal(text or "0")
    except InvalidOperation:
        raise ValueError(f"price {value!r} is not a number") from None
    if price < 0 or not price.is_finite() or price >= Decimal(10) ** 14:
        raise ValueError(f"price {value!r} is out of range")
    return price.quantize(Decimal("0.01"))


def clean_rows(raw: list[dict[str, Any]]) -> list[ProductRow]:
    """Checked rows, or ImportInvalid naming every bad row."""
    rows, errors, seen = [], [], set()
    for number, item in enumerate(raw, start=1):
        where = f"row {number}"
        external_id = str(item.get("id") or "").strip()
        name = str(item.get("name") or "").strip()
        if not external_id:
            errors.append(f"{where}: `id` is required")
            continue
        where = f"row {number} ({external_id})"
        if len(external_id) > 100:
            errors.append(f"{where}: `id` is longer than 100 characters")
            continue
        if external_id in seen:
            errors.append(f"{where}: the id appears twice")
            continue
        seen.add(external_id)
        if not name:
            errors.append(f"{where}: `name` is required")
            continue
        try:
            rows.append(
                ProductRow(
                    external_id=external_id,
                    name=name[:300],
                    description=str(item.get("description") or "").strip(),
                    category=str(item.get("category") or "").strip()[:100],
                    price=_price(item.get("price")),
                    features=_features(item.get("features")),
                    specifications=_specifications(item.get("specifications")),
                    availability=_availability(item.get("availability")),
                )
            )
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    if errors:
        raise ImportInvalid(errors)
    if not rows:
        raise ImportInvalid(["the file holds no products"])
    return rows


# --- The state change --------------------------------------------------------------------------


def products_import(brand: Brand, rows: list[ProductRow]) -> ImportResult:
    """Create or update the brand's products from checked rows, all in one transaction."""
    result = ImportResult()
    with transaction.atomic():
        existing = {p.external_id: p for p in Product.objects.select_for_update().filter(brand=brand)}
        for row in rows:
            values = {
                "name": row.name,
                "description": row.description,
                "category": row.category,
                "price": row.price,
                "features": row.features,
                "specifications": row.specifications,
                "availability": row.availability,
            }
            product = existing.get(row.external_id)
            if product is None:
                Product.objects.create(brand=brand, external_id=row.external_id, **values)
                result.created += 1
            else:
                for key, value in values.items():
                    setattr(product, key, value)
                product.save(update_fields=[*values, "updated_at"])
                result.updated += 1
            result.ids.append(row.external_id)
    return result


def products_import_file(brand: Brand, content: str | bytes, filename: str = "") -> ImportResult:
    return products_import(brand, clean_rows(read_rows(content, filename)))
