"""Which language the visitor writes in: English or Indonesian (the seed's two)."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-zA-Z]+")
_INDONESIAN = frozenset(
    "saya aku kamu anda apa ada yang untuk dengan dan atau tidak bisa mau ingin cari mencari butuh "
    "perlu berapa harga murah mahal bagus terbaik tolong bantu kerja kantor sekolah kuliah main game "
    "laptop nya ini itu di ke dari juga sudah belum dong ya kah gimana bagaimana rekomendasi punya "
    "buat pakai terima kasih halo selamat pagi siang sore malam layar murah".split()
)
_ENGLISH = frozenset(
    "i me my you your what is are the a an for with and or not can want need looking find "
    "how much price cheap best good please help work office school play game this that do does "
    "have any recommend hello hi thanks thank".split()
)


def detect_language(text: str) -> str:
    """"id" when the text reads as Indonesian, else "en"."""
    words = [w.lower() for w in _WORD.findall(text)]
    indonesian = sum(w in _INDONESIAN for w in words)
    english = sum(w in _ENGLISH for w in words)
    return "id" if indonesian > english else "en"
