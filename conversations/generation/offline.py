"""The built-in offline provider: answers from the brand's catalog without any model.

It writes what a helpful shop assistant would say about the retrieved products, in the
visitor's language: the best match in stock with its price and highlights, the other matches,
and which of them are out of stock (never offered as available). A voice answer is one
sentence. The products it talks about are exactly the ones it was given, so the answer's
`suggested_products` are what the answer is about.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from conversations.generation.base import GenerationRequest, split_words
from conversations.generation.language import wordset

Product = dict[str, Any]

_WORD = re.compile(r"[a-z]+")
_CHEAPEST = re.compile(
    r"\b(cheap|cheapest|cheaper|budget|affordable|least expensive|lowest price|inexpensive|"
    r"murah|termurah|hemat|terjangkau)\b"
)
_PRICE = re.compile(r"\b(price|prices|cost|costs|how much|harga|harganya|berapa|biaya)\b")
_STOCK = re.compile(r"\b(in stock|available|availability|stock|tersedia|stok|ready|masih ada|sold out|habis)\b")
_GREETING_WORDS = wordset(
    "hi hello hey hai halo hallo good morning afternoon evening selamat pagi siang sore malam there yo"
)
_THANKS = re.compile(r"\b(thanks|thank you|thx|terima kasih|makasih|trims|thank)\b")


# An unavailable best match is what the question is about when it scores this much above the
# best available one.
SUBJECT_MARGIN = 1.3


class OfflineProvider:
    name = "offline"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        for piece in split_words(compose_answer(request)):
            yield piece
            await asyncio.sleep(0)


# --- What the visitor asks -------------------------------------------------------------------


def _intent(text: str) -> str:
    lowered = text.lower()
    words = _WORD.findall(lowered)
    if words and all(word in _GREETING_WORDS for word in words):
        return "greeting"
    if _THANKS.search(lowered) and len(words) <= 6:
        return "thanks"
    if _CHEAPEST.search(lowered):
        return "cheapest"
    if _STOCK.search(lowered):
        return "stock"
    if _PRICE.search(lowered):
        return "price"
    return "recommend"


# --- How things are said ---------------------------------------------------------------------


def format_price(price: Any, language: str) -> str:
    """IDR as people write it: `Rp 19.999.000` in Indonesian, `IDR 19,999,000` in English."""
    try:
        amount = round(float(price))
    except (TypeError, ValueError):
        return ""
    grouped = f"{amount:,}"
    return f"Rp {grouped.replace(',', '.')}" if language == "id" else f"IDR {grouped}"


def _join(items: Sequence[str], language: str) -> str:
    conjunction = " dan " if language == "id" else " and "
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + conjunction + items[-1]


def _named(product: Product, language: str) -> str:
    name = str(product.get("name") or product.get("id") or "")
    return name if language == "id" else f"the {name}"


def _with_price(product: Product, language: str) -> str:
    price = format_price(product.get("price"), language)
    return f"{_named(product, language)} ({price})" if price else _named(product, language)


def _highlights(product: Product, count: int = 3) -> list[str]:
    features = product.get("features") or []
    return [str(feature) for feature in features[:count] if str(feature).strip()]


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- Composing -------------------------------------------------------------------------------


def compose_answer(request: GenerationRequest) -> str:
    language = "id" if request.language == "id" else "en"
    scored = sorted(request.products, key=lambda s: -s.score)
    available = [s.product for s in scored if s.product.get("availability")]
    unavailable = [s.product for s in scored if not s.product.get("availability")]
    intent = _intent(request.user_text)
    if intent == "cheapest":
        available.sort(key=lambda p: float(p.get("price") or 0))
    elif scored and not scored[0].product.get("availability"):
        best_available = max((s.score for s in scored if s.product.get("availability")), default=0.0)
        if scored[0].score >= SUBJECT_MARGIN * best_available:
            # The visitor asked about a product that is out of stock: say so first, then offer
            # what is in stock.
            intent = "subject_unavailable"
    if request.voice:
        return _voice(request.brand_name, intent, available, unavailable, language)
    if language == "id":
        return _indonesian(request.brand_name, intent, available, unavailable)
    return _english(request.brand_name, intent, available, unavailable)


def _voice(brand: str, intent: str, available: list[Product], unavailable: list[Product], language: str) -> str:
    """Exactly one sentence, natural when read aloud."""
    if intent == "subject_unavailable":
        missing = unavailable[0]["name"]
        if language == "id":
            if available:
                return f"Maaf, {missing} sedang kosong, tetapi {available[0]['name']} tersedia sebagai alternatif."
            return f"Maaf, {missing} sedang tidak tersedia saat ini."
        if available:
            return f"Sorry, the {missing} is out of stock, but the {available[0]['name']} is available instead."
        return f"Sorry, the {missing} is currently out of stock."
    if language == "id":
        if available:
            best = available[0]
            price = format_price(best.get("price"), "id")
            if intent == "cheapest":
                return f"Pilihan paling terjangkau adalah {best['name']} seharga {price}."
            if intent == "stock":
                return f"Ya, {best['name']} tersedia seharga {price}."
            if intent == "price":
                return f"Harga {best['name']} adalah {price}."
            return f"Saya merekomendasikan {best['name']} seharga {price}."
        if unavailable:
            return f"Maaf, {unavailable[0]['name']} sedang tidak tersedia saat ini."
        if intent == "thanks":
            return "Sama-sama, senang bisa membantu!"
        if intent == "greeting":
            return f"Halo, ada yang bisa saya bantu di {brand} hari ini?"
        return "Maaf, saya belum menemukan produk yang cocok, bisa ceritakan lebih lanjut apa yang Anda cari?"
    if available:
        best = available[0]
        price = format_price(best.get("price"), "en")
        if intent == "cheapest":
            return f"The most affordable option is the {best['name']} at {price}."
        if intent == "stock":
            return f"Yes, the {best['name']} is in stock at {price}."
        if intent == "price":
            return f"The {best['name']} costs {price}."
        return f"I'd recommend the {best['name']} for {price}."
    if unavailable:
        return f"Sorry, the {unavailable[0]['name']} is currently out of stock."
    if intent == "thanks":
        return "You're welcome, happy to help!"
    if intent == "greeting":
        return f"Hello, how can I help you at {brand} today?"
    return "Sorry, I couldn't find a matching product, could you tell me a bit more about what you need?"


def _english(brand: str, intent: str, available: list[Product], unavailable: list[Product]) -> str:
    sentences: list[str] = []
    if not available and not unavailable:
        if intent == "greeting":
            return (
                f"Hello! I'm the {brand} assistant. Tell me what you're looking for and your budget, "
                "and I'll suggest the best match."
            )
        if intent == "thanks":
            return "You're welcome! Let me know if there's anything else I can help you with."
        return (
            f"Sorry, I couldn't find a {brand} product that matches that. Could you tell me a bit more, "
            "for example what you'll use it for and your budget?"
        )
    if intent == "subject_unavailable":
        missing, unavailable = unavailable[0], unavailable[1:]
        sentences.append(f"Sorry, the {missing['name']} is currently out of stock")
        if available:
            listed = _join([_with_price(product, "en") for product in available], "en")
            sentences.append(f"In stock instead, I can offer {listed}")
    elif available:
        best, others = available[0], available[1:]
        price = format_price(best.get("price"), "en")
        if intent == "cheapest":
            sentences.append(f"The most affordable match is the {best['name']} at {price}")
        elif intent == "stock":
            sentences.append(f"Good news: the {best['name']} is in stock at {price}")
        elif intent == "price":
            sentences.append(f"The {best['name']} costs {price}")
        else:
            sentences.append(f"I'd recommend the {best['name']} ({price})")
        description = str(best.get("description") or "").strip()
        if description:
            sentences.append(_capitalised(description))
        highlights = _highlights(best)
        if highlights:
            sentences.append("Highlights: " + _join(highlights, "en"))
        if others:
            alternatives = [_with_price(product, "en") for product in others]
            lead = "Another option is" if len(others) == 1 else "Other good options are"
            sentences.append(f"{lead} {_join(alternatives, 'en')}")
    if unavailable:
        names = _join([_named(product, "en") for product in unavailable], "en")
        verb = "is" if len(unavailable) == 1 else "are"
        if available:
            sentences.append(f"{_capitalised(names)} would also fit, but {verb} currently out of stock")
        else:
            sentences.append(f"Sorry, {names} {verb} currently out of stock")
            sentences.append("Would you like me to suggest something similar that is available?")
    if available:
        sentences.append(
            "Would you like a comparison or more details?" if len(available) > 1 else "Would you like more details?"
        )
    return " ".join(_sentence(sentence) for sentence in sentences)


def _indonesian(brand: str, intent: str, available: list[Product], unavailable: list[Product]) -> str:
    sentences: list[str] = []
    if not available and not unavailable:
        if intent == "greeting":
            return (
                f"Halo! Saya asisten {brand}. Ceritakan apa yang Anda cari dan berapa anggarannya, "
                "nanti saya carikan pilihan yang paling cocok."
            )
        if intent == "thanks":
            return "Sama-sama! Kabari saya kalau ada lagi yang bisa dibantu."
        return (
            f"Maaf, saya belum menemukan produk {brand} yang cocok. Bisa ceritakan lebih lanjut, "
            "misalnya untuk apa dan berapa anggaran Anda?"
        )
    if intent == "subject_unavailable":
        missing, unavailable = unavailable[0], unavailable[1:]
        sentences.append(f"Maaf, {missing['name']} sedang tidak tersedia saat ini")
        if available:
            listed = _join([_with_price(product, "id") for product in available], "id")
            sentences.append(f"Sebagai gantinya, yang tersedia: {listed}")
    elif available:
        best, others = available[0], available[1:]
        price = format_price(best.get("price"), "id")
        if intent == "cheapest":
            sentences.append(f"Pilihan paling terjangkau adalah {best['name']} seharga {price}")
        elif intent == "stock":
            sentences.append(f"Kabar baik, {best['name']} tersedia seharga {price}")
        elif intent == "price":
            sentences.append(f"Harga {best['name']} adalah {price}")
        else:
            sentences.append(f"Saya merekomendasikan {best['name']} ({price})")
        highlights = _highlights(best)
        if highlights:
            sentences.append("Keunggulannya: " + _join(highlights, "id"))
        if others:
            alternatives = [_with_price(product, "id") for product in others]
            sentences.append(f"Pilihan lain yang bagus: {_join(alternatives, 'id')}")
    if unavailable:
        names = _join([_named(product, "id") for product in unavailable], "id")
        if available:
            sentences.append(f"{names} juga cocok, tetapi stoknya sedang kosong")
        else:
            sentences.append(f"Maaf, {names} sedang tidak tersedia saat ini")
            sentences.append("Mau saya carikan alternatif yang tersedia?")
    if available:
        sentences.append("Mau saya bandingkan atau jelaskan lebih detail?")
    return " ".join(_sentence(sentence) for sentence in sentences)
