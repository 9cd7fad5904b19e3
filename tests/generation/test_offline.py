import re

import pytest

from conversations.generation.base import GenerationRequest, ScoredProduct
from conversations.generation.offline import OfflineProvider, compose_answer, format_price

ONE_SENTENCE = re.compile(r"[.!?](\s|$)")


def product(pid, name, price, available=True, **extra):
    return {"id": pid, "name": name, "description": extra.get("description", f"The {name}."),
            "category": extra.get("category", "Laptop"), "price": float(price),
            "features": extra.get("features", ["16GB RAM", "Thin and light"]), "specifications": {},
            "availability": available}  # fmt: skip


XPS = product("laptop-002", "Dell XPS 13 Plus", 19999000)
ASPIRE = product("laptop-006", "Acer Aspire 5 Slim", 7499000)
LEGION = product("laptop-008", "Lenovo Legion Pro 7i", 45999000, available=False)


def request(text, products, language="en", voice=False):
    return GenerationRequest(brand_name="TechPro Solutions", user_text=text, language=language, voice=voice,
                             products=tuple(ScoredProduct(p, s) for p, s in products))  # fmt: skip


def test_it_recommends_the_best_match_with_price_and_mentions_the_others():
    answer = compose_answer(request("laptop for work", [(XPS, 0.8), (ASPIRE, 0.5)]))
    assert answer.startswith("I'd recommend the Dell XPS 13 Plus (IDR 19,999,000).")
    assert "Acer Aspire 5 Slim (IDR 7,499,000)" in answer


def test_an_unavailable_product_is_named_as_out_of_stock_never_recommended():
    answer = compose_answer(request("laptop", [(XPS, 0.8), (LEGION, 0.7)]))
    assert "Lenovo Legion Pro 7i would also fit, but is currently out of stock" in answer
    assert "recommend the Lenovo" not in answer


def test_a_question_about_an_out_of_stock_product_says_so_first_and_offers_what_is_in_stock():
    answer = compose_answer(request("Is the Legion in stock?", [(LEGION, 0.6), (XPS, 0.2)]))
    assert answer.startswith("Sorry, the Lenovo Legion Pro 7i is currently out of stock.")
    assert "Dell XPS 13 Plus" in answer


def test_only_out_of_stock_matches_never_sound_available():
    for voice in (False, True):
        answer = compose_answer(request("legion", [(LEGION, 0.9)], voice=voice))
        assert "out of stock" in answer and "recommend" not in answer


def test_cheapest_picks_the_lowest_price_among_the_matches():
    answer = compose_answer(request("What is your cheapest laptop?", [(XPS, 0.9), (ASPIRE, 0.5)]))
    assert answer.startswith("The most affordable match is the Acer Aspire 5 Slim at IDR 7,499,000.")


@pytest.mark.parametrize("language", ["en", "id"])
@pytest.mark.parametrize("text", ["laptop for work", "cheapest laptop", "is it in stock", "hello", "thanks",
                                  "refrigerator", "berapa harganya"])  # fmt: skip
def test_voice_answers_are_one_sentence(language, text):
    for products in ([(XPS, 0.9), (ASPIRE, 0.4)], [(LEGION, 0.9), (XPS, 0.2)], [(LEGION, 0.9)], []):
        answer = compose_answer(request(text, products, language=language, voice=True))
        assert len(ONE_SENTENCE.findall(answer)) == 1, answer


def test_indonesian_answers_are_in_indonesian_with_rupiah():
    answer = compose_answer(request("laptop untuk kerja", [(XPS, 0.9), (LEGION, 0.5)], language="id"))
    assert answer.startswith("Saya merekomendasikan Dell XPS 13 Plus (Rp 19.999.000).")
    assert "stoknya sedang kosong" in answer
    nothing = compose_answer(request("kulkas", [], language="id"))
    assert nothing.startswith("Maaf, saya belum menemukan produk TechPro Solutions")


def test_no_match_asks_what_the_visitor_needs():
    assert "Could you tell me a bit more" in compose_answer(request("refrigerator", []))
    assert compose_answer(request("hello", [])).startswith("Hello! I'm the TechPro Solutions assistant.")


def test_prices_are_written_as_people_write_rupiah():
    assert format_price(19999000.0, "en") == "IDR 19,999,000"
    assert format_price(19999000.0, "id") == "Rp 19.999.000"


async def test_the_stream_joins_back_to_exactly_the_answer():
    req = request("laptop for work", [(XPS, 0.8), (ASPIRE, 0.5)])
    pieces = [piece async for piece in OfflineProvider().stream(req)]
    assert len(pieces) > 5 and "".join(pieces) == compose_answer(req)
