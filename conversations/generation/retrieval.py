"""Retrieval: the brand's products most relevant to what the visitor asked.

Each process keeps one BM25 index per brand in memory, built from the catalog on first use and
rebuilt when the catalog changes. The catalog's version is `(count, max(updated_at))`, two
index-only reads per query, so an edit in the admin, an import or a deletion is seen by the next
query without signals. Each posting's BM25 weight is computed at build time, so a query adds up
the postings of its few terms (vectorised) and picks the best with a partial sort.

Scores are in [0, 1]: the share of the query's information (IDF-weighted terms) the product
covers, tempered by how its BM25 score compares with the best match. Nothing matching: [].
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import DEFAULT_DB_ALIAS, connections

from conversations.generation.base import ScoredProduct
from flows.models import Product

_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
K1, B = 1.2, 0.75
# Where a word appears says how much it means: a name is worth more than a passing mention.
FIELD_WEIGHTS = {"name": 3.0, "category": 2.5, "features": 1.5, "specifications": 1.0, "description": 1.0}
# An unavailable product still answers a question about it, but loses ties to ones in stock.
UNAVAILABLE_FACTOR = 0.85
# Results scoring below this share of the best match's BM25 are left out.
TAIL_CUT = 0.35

STOPWORDS = frozenset(
    " ".join(
        [
            # English
            "a an the and or but of for to in on at by with from about into over is are was were be been "
            "being am do does did have has had i me my we our you your it its this that these those there "
            "here what which who whom how why when where can could would should will shall may might must "
            "need needs want wants looking look find show tell give get please any some something anything "
            "one ones just also very really much many more most less than then so too not no yes hi hello "
            "hey thanks thank good like would recommend recommendation suggest help me us them they he she "
            "if as up out all",
            # Indonesian
            "saya aku kamu anda apa ada yang untuk dengan dan atau tidak bisa mau ingin cari mencari "
            "butuh perlu tolong bantu ini itu di ke dari juga sudah belum dong ya kah gimana bagaimana "
            "rekomendasi rekomendasikan punya buat pakai terima kasih halo selamat pagi siang sore malam "
            "nya lagi sih deh nih kak mas mbak pak bu adalah sebuah suatu seperti kalau jika agar supaya "
            "tapi tetapi karena yg dgn utk sama banget sekali paling lebih yang mana minta tanya",
        ]
    ).split()
)

# Query expansion: Indonesian words to the catalog's English, and a few English paraphrases.
SYNONYMS: dict[str, tuple[str, ...]] = {
    # Indonesian → English
    "kerja": ("work", "business", "office", "productivity"),
    "bekerja": ("work", "business", "office"),
    "kantor": ("office", "business", "work"),
    "bisnis": ("business",),
    "murah": ("budget", "affordable", "cheap"),
    "terjangkau": ("budget", "affordable"),
    "mahal": ("premium",),
    "layar": ("monitor", "display", "screen"),
    "monitor": ("display",),
    "tikus": ("mouse",),
    "papan": ("keyboard",),
    "ketik": ("keyboard",),
    "tetikus": ("mouse",),
    "main": ("gaming",),
    "gim": ("gaming",),
    "game": ("gaming",),
    "games": ("gaming",),
    "sekolah": ("student", "school"),
    "kuliah": ("student", "university"),
    "mahasiswa": ("student",),
    "pelajar": ("student",),
    "ringan": ("lightweight", "portable", "light"),
    "tipis": ("thin", "slim"),
    "baterai": ("battery",),
    "tahan": ("battery", "long"),
    "desain": ("design", "creative"),
    "desainer": ("designer", "creative", "design"),
    "video": ("video",),
    "penyimpanan": ("storage", "ssd"),
    "memori": ("memory", "ram"),
    "kamera": ("camera", "webcam"),
    "suara": ("audio", "sound"),
    "headset": ("headset", "headphones"),
    "earphone": ("headphones", "earbuds"),
    "kabel": ("cable",),
    "tas": ("bag", "backpack", "sleeve"),
    "pengisi": ("charger",),
    "casan": ("charger",),
    "dudukan": ("dock", "stand"),
    "cetak": ("printer",),
    "jaringan": ("network", "router", "wifi"),
    "internet": ("router", "wifi"),
    "lebar": ("ultrawide", "wide"),
    "melengkung": ("curved",),
    "nirkabel": ("wireless",),
    "tanpa": ("wireless",),
    "anak": ("student", "family"),
    "rumah": ("home",),
    "perjalanan": ("travel", "portable"),
    "jalan": ("travel", "portable"),
    # English paraphrases
    "work": ("business", "office", "productivity"),
    "office": ("business", "productivity"),
    "business": ("office", "productivity"),
    "cheap": ("budget", "affordable"),
    "cheapest": ("budget", "affordable"),
    "inexpensive": ("budget", "affordable"),
    "affordable": ("budget",),
    "screen": ("monitor", "display"),
    "display": ("monitor",),
    "notebook": ("laptop",),
    "laptops": ("laptop",),
    "monitors": ("monitor",),
    "gamer": ("gaming",),
    "gaming": ("gaming",),
    "light": ("lightweight", "portable"),
    "portable": ("lightweight", "travel"),
    "travel": ("portable", "lightweight"),
    "students": ("student",),
    "college": ("student", "university"),
    "school": ("student",),
    "design": ("creative",),
    "designer": ("creative", "design"),
    "photo": ("creative", "photography"),
    "editing": ("creative",),
    "headphone": ("headphones",),
    "earbud": ("earbuds",),
    "charger": ("charger", "adapter"),
    "webcam": ("webcam", "camera"),
    "programming": ("developer", "coding"),
    "coding": ("developer", "programming"),
    "developer": ("coding", "programming"),
}
# Expanded words count less than the visitor's own.
SYNONYM_WEIGHT = 0.6


def _fold(text: str) -> str:
    """Lower case without accents, so `Café` finds `cafe`."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _stem(word: str) -> str:
    """A light English plural stem: enough for laptops/laptop, not a linguistic claim."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    return [_stem(token) for token in _TOKEN.findall(_fold(text))]


def query_terms(text: str) -> dict[str, float]:
    """The query's searchable terms and their weights (1 for the visitor's words, less for
    expansions); stopwords removed, unless nothing else is left."""
    raw = _TOKEN.findall(_fold(text))
    words = [w for w in raw if w not in STOPWORDS] or []
    terms: dict[str, float] = {}
    for word in words:
        terms[_stem(word)] = 1.0
    for word in words:
        for synonym in SYNONYMS.get(word, ()):
            stem = _stem(synonym)
            terms.setdefault(stem, SYNONYM_WEIGHT)
    return terms


def _product_fields(product: Product) -> dict[str, str]:
    specifications = product.specifications if isinstance(product.specifications, dict) else {}
    features = product.features if isinstance(product.features, list) else []
    return {
        "name": f"{product.name} {product.external_id}",
        "category": product.category,
        "features": " ".join(str(f) for f in features),
        "specifications": " ".join(f"{key} {value}" for key, value in specifications.items()),
        "description": product.description,
    }


@dataclass
class BrandIndex:
    """A BM25 index over one brand's catalog, immutable once built."""

    version: tuple[Any, ...]
    products: list[dict[str, Any]]
    # term → (document numbers, BM25 weight of the term in each of those documents)
    postings: dict[str, tuple[np.ndarray, np.ndarray]]
    idf: dict[str, float]
    # Ranking factor per document (availability).
    factors: np.ndarray

    @classmethod
    def build(cls, version: tuple[Any, ...], rows: Iterable[Product]) -> BrandIndex:
        products: list[dict[str, Any]] = []
        frequencies: list[dict[str, float]] = []
        lengths: list[float] = []
        for product in rows:
            counts: dict[str, float] = defaultdict(float)
            length = 0.0
            for field, text in _product_fields(product).items():
                weight = FIELD_WEIGHTS[field]
                for token in tokenize(text):
                    counts[token] += weight
                    length += weight
            products.append(product.as_wire())
            frequencies.append(counts)
            lengths.append(length)
        total = len(products)
        average = (sum(lengths) / total) if total else 1.0
        document_frequency: dict[str, int] = defaultdict(int)
        for counts in frequencies:
            for term in counts:
                document_frequency[term] += 1
        idf = {term: math.log(1 + (total - df + 0.5) / (df + 0.5)) for term, df in document_frequency.items()}
        lists: dict[str, tuple[list[int], list[float]]] = {}
        for number, counts in enumerate(frequencies):
            norm = K1 * (1 - B + B * lengths[number] / average)
            for term, tf in counts.items():
                documents, weights = lists.setdefault(term, ([], []))
                documents.append(number)
                weights.append(idf[term] * tf * (K1 + 1) / (tf + norm))
        postings = {
            term: (np.asarray(documents, dtype=np.int32), np.asarray(weights, dtype=np.float64))
            for term, (documents, weights) in lists.items()
        }
        factors = np.asarray([1.0 if p["availability"] else UNAVAILABLE_FACTOR for p in products], dtype=np.float64)
        return cls(version=version, products=products, postings=postings, idf=idf, factors=factors)

    def search(self, text: str, limit: int = 3) -> list[ScoredProduct]:
        terms = query_terms(text)
        if not terms or not self.products:
            return []
        # An unknown word still counts in the denominator: a query about things the catalog
        # does not have should not look like a confident match.
        unknown_idf = math.log(1 + (len(self.products) + 0.5) / 0.5)
        wanted = sum(weight * self.idf.get(term, unknown_idf) for term, weight in terms.items())
        scores = np.zeros(len(self.products))
        covered = np.zeros(len(self.products))
        matched = False
        for term, weight in terms.items():
            found = self.postings.get(term)
            if found is None:
                continue
            documents, weights = found
            # A term's documents are distinct, so fancy-index addition is exact.
            scores[documents] += weight * weights
            covered[documents] += weight * self.idf[term]
            matched = True
        if not matched:
            return []
        ranked = scores * self.factors
        count = min(limit, int(np.count_nonzero(ranked)))
        if count <= 0:
            return []
        # A partial sort finds the best `count` without sorting the whole catalog.
        candidates = np.argpartition(-ranked, count - 1)[:count] if count < len(ranked) else np.arange(len(ranked))
        best = sorted(candidates.tolist(), key=lambda number: (-ranked[number], number))
        top = float(ranked[best[0]])
        results = []
        for number in best:
            relative = float(ranked[number]) / top
            if relative < TAIL_CUT:
                break  # a passing mention next to real matches is noise, not a suggestion
            coverage = min(1.0, float(covered[number]) / wanted) if wanted else 0.0
            score = coverage * (0.5 + 0.5 * relative)
            results.append(ScoredProduct(self.products[number], round(max(0.0, min(1.0, score)), 4)))
        results.sort(key=lambda scored: -scored.score)  # stable: BM25 order breaks ties
        return results


_indexes: dict[int, BrandIndex] = {}
_lock = threading.Lock()


def catalog_version(brand_id: int) -> tuple[Any, ...]:
    """Changes whenever a product of the brand is added, edited or deleted: the count and the
    latest edit, in one plain statement over the (brand, updated_at) index. Every answer asks;
    the ORM's two queries were a sixth of an answer's start."""
    connection = connections[DEFAULT_DB_ALIAS]
    quote = connection.ops.quote_name
    meta = Product._meta
    sql = (
        f"SELECT COUNT(*), MAX({quote(meta.get_field('updated_at').column)}) FROM {quote(meta.db_table)}"  # noqa: S608 (names from model metadata)
        f" WHERE {quote(meta.get_field('brand').column)} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [brand_id])
        count, latest = cursor.fetchone()
    return (count, latest)


def brand_index(brand_id: int) -> BrandIndex:
    version = catalog_version(brand_id)
    index = _indexes.get(brand_id)
    if index is not None and index.version == version:
        return index
    with _lock:
        index = _indexes.get(brand_id)
        if index is None or index.version != version:
            rows = Product.objects.filter(brand_id=brand_id).order_by("id")
            index = BrandIndex.build(version, rows.iterator(chunk_size=2000))
            _indexes[brand_id] = index
    return index


def forget(brand_id: int | None = None) -> None:
    """Drop cached indexes (all brands when None); the next query rebuilds."""
    with _lock:
        if brand_id is None:
            _indexes.clear()
        else:
            _indexes.pop(brand_id, None)


def retrieve(brand_id: int, text: str, limit: int = 3) -> list[ScoredProduct]:
    """The brand's products most relevant to `text`, best first, each scored in [0, 1]."""
    if limit <= 0 or not text.strip():
        return []
    return brand_index(brand_id).search(text, limit)


def confidence(products: Iterable[ScoredProduct]) -> float | None:
    """The seed's confidence_score: the best match's score, or None when nothing matched."""
    scores = [scored.score for scored in products]
    return max(scores) if scores else None
