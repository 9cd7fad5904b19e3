import pytest

from conversations.generation.language import detect_language


@pytest.mark.parametrize(
    "text",
    [
        "I need a laptop for business work",
        "What is your cheapest laptop?",
        "Is the Dell XPS in stock?",
        "Do you have a monitor for gaming?",
        "thanks!",
    ],
)
def test_it_reads_english(text):
    assert detect_language(text) == "en"


@pytest.mark.parametrize(
    "text",
    [
        "Saya butuh laptop untuk kerja",
        "laptop gaming yang murah dong",
        "Berapa harga monitor 4K?",
        "Ada mouse wireless?",
        "Rekomendasikan laptop buat kuliah",
        "Apakah ThinkPad X1 masih tersedia?",
        "terima kasih",
        "mau beli laptop",
    ],
)
def test_it_reads_indonesian_even_mixed_with_english_product_words(text):
    assert detect_language(text) == "id"


def test_text_without_clues_keeps_the_conversations_language():
    assert detect_language("laptop") == "en"
    assert detect_language("ok", default="id") == "id"
    assert detect_language("ThinkPad X1", default="id") == "id"


def test_indonesian_affixes_count_for_words_the_lists_do_not_know():
    assert detect_language("menggunakan dipasangkan") == "id"
