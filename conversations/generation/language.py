"""Which language the visitor writes in: English or Indonesian (the seed's two).

Visitors write short, informal messages that mix in English product words ("laptop gaming yang
murah dong"), so counting dictionary words is not enough: Indonesian function words and
particles weigh more than nouns both languages share, and Indonesian affixes (me-, ber-, -kan,
-nya …) count for words the lists do not know. English wins ties and texts with no clues.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"[a-z]+")


def wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that decide on their own: function words, particles and question words.
_INDONESIAN_STRONG = wordset(
    "saya aku gue gw kamu anda kalian kami kita dia mereka apa apakah ada yang untuk dengan dan "
    "atau tidak tak nggak gak enggak ngga bukan bisa dapat mau ingin cari mencari butuh perlu "
    "berapa harganya tolong bantu ini itu di ke dari juga sudah udah belum dong ya kah gimana "
    "bagaimana mana kenapa mengapa kapan siapa punya buat pakai terima kasih makasih halo selamat "
    "pagi siang sore malam nya lagi sih deh nih kak kakak mas mbak pak bu adalah sebuah seperti "
    "kalau kalo jika agar supaya tapi tetapi karena yg dgn utk sama banget sekali paling lebih "
    "kurang minta tanya boleh apakah tersedia stok masih jual beli kirim sampai jadi aja saja "
    "bagus murah mahal terbaik rekomendasi rekomendasikan sarankan cocok baik baru lama besar "
    "kecil ringan berat cepat lambat sekolah kuliah kerja kantor rumah layar harga uang juta ribu "
    "rupiah anak istri suami teman saat waktu hari bulan tahun banyak sedikit semua setiap tentang "
    "biar sedang lagi akan pernah bikin kasih dipakai digunakan berapaan gan sis bro"
)
_ENGLISH_STRONG = wordset(
    "i me my mine you your yours we our they their he she it its is are was were be been am do "
    "does did have has had what which who whom how why when where the a an for with and or not "
    "no yes can could would should will want need looking find much price cheap cheapest best "
    "good great please help work office school play this that these those any some recommend "
    "hello hi hey thanks thank there here about from into than then also very really just "
    "available stock sell buy ship something anything under over between budget for of to in on "
    "at by if but so too more most less only still"
)
# Words both languages use in chat (product words, loanwords): no vote.
_NEUTRAL = wordset("laptop monitor gaming game mouse keyboard headset webcam ram ssd usb wifi oke ok online office")
_INDONESIAN_PREFIXES = ("meng", "meny", "mem", "men", "ber", "ter", "per", "peng", "pem", "pen", "di", "ke")
_INDONESIAN_SUFFIXES = ("kan", "nya", "lah", "kah", "an")


def _affix_vote(word: str) -> bool:
    """An unknown word shaped like Indonesian (prefix and suffix): `menggunakan`, `dipakaikan`."""
    if len(word) < 7:
        return False
    has_prefix = word.startswith(_INDONESIAN_PREFIXES)
    has_suffix = word.endswith(_INDONESIAN_SUFFIXES)
    return has_prefix and has_suffix


def language_scores(words: Sequence[str]) -> tuple[float, float]:
    """(Indonesian, English) evidence in the words."""
    indonesian = english = 0.0
    for word in words:
        if word in _NEUTRAL:
            continue
        in_id, in_en = word in _INDONESIAN_STRONG, word in _ENGLISH_STRONG
        if in_id and not in_en:
            indonesian += 1.0
        elif in_en and not in_id:
            english += 1.0
        elif not in_id and not in_en and _affix_vote(word):
            indonesian += 0.5
    return indonesian, english


def detect_language(text: str, default: str = "en") -> str:
    """ "id" when the text reads as Indonesian, "en" when it reads as English, else `default`
    (pass the conversation's language so far to keep it through short replies like "ok")."""
    words = _WORD.findall(text.lower())
    indonesian, english = language_scores(words)
    if indonesian > english:
        return "id"
    if english > indonesian:
        return "en"
    return default if default in ("en", "id") else "en"
