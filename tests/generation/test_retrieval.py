from decimal import Decimal

import pytest

from conversations.generation import retrieval
from flows.demo import catalog
from flows.models import Brand, Product


@pytest.fixture
def shop(techpro):
    catalog.load(techpro)
    return techpro


def names(results):
    return [scored.product["name"] for scored in results]


def test_it_finds_the_products_a_question_is_about(shop):
    results = retrieval.retrieve(shop.pk, "I need a laptop for business work")
    assert results and all(r.product["category"] == "Laptop" for r in results)
    assert "Lenovo ThinkPad X1 Carbon Gen 11" in names(results) or "Dell Latitude 5440" in names(results)
    assert retrieval.retrieve(shop.pk, "wireless mouse")[0].product["id"] == "acc-001"


def test_scores_are_between_zero_and_one_best_first(shop):
    for text in ("gaming monitor", "laptop", "Logitech MX Master 3S wireless mouse", "monitor murah"):
        scores = [r.score for r in retrieval.retrieve(shop.pk, text)]
        assert scores and all(0 < s <= 1 for s in scores)
        assert scores == sorted(scores, reverse=True)


def test_a_precise_question_scores_higher_than_a_vague_one(shop):
    precise = retrieval.retrieve(shop.pk, "Logitech MX Master 3S wireless mouse")[0].score
    vague = retrieval.retrieve(shop.pk, "something nice for my desk at home please")
    assert precise > 0.8
    assert not vague or vague[0].score < precise


def test_nothing_matching_gives_no_products_and_no_confidence(shop):
    assert retrieval.retrieve(shop.pk, "do you sell refrigerators") == []
    assert retrieval.retrieve(shop.pk, "   ") == []
    assert retrieval.confidence([]) is None


def test_indonesian_questions_find_english_catalog_entries(shop):
    results = retrieval.retrieve(shop.pk, "layar untuk main game")
    assert results[0].product["category"] == "Monitor"
    assert "gaming" in results[0].product["description"].lower()


def test_unavailable_products_come_with_their_availability(shop):
    legion = retrieval.retrieve(shop.pk, "Lenovo Legion Pro 7i")[0]
    assert legion.product["id"] == "laptop-008" and legion.product["availability"] is False


def test_products_of_other_brands_never_appear(shop):
    other = Brand.objects.create(slug="other", name="Other")
    Product.objects.create(brand=other, external_id="fridge-1", name="Frosty Refrigerator", price=Decimal(1))
    assert retrieval.retrieve(shop.pk, "refrigerator") == []
    assert names(retrieval.retrieve(other.pk, "refrigerator")) == ["Frosty Refrigerator"]


def test_the_index_follows_edits_additions_and_deletions(shop):
    assert retrieval.retrieve(shop.pk, "smartwatch") == []
    watch = Product.objects.create(
        brand=shop, external_id="watch-1", name="Galaxy Watch 6 Smartwatch", category="Wearable", price=Decimal(4999000)
    )
    assert names(retrieval.retrieve(shop.pk, "smartwatch")) == ["Galaxy Watch 6 Smartwatch"]
    watch.availability = False
    watch.save()
    assert retrieval.retrieve(shop.pk, "smartwatch")[0].product["availability"] is False
    watch.delete()
    assert retrieval.retrieve(shop.pk, "smartwatch") == []


def test_demo_catalog_loads_idempotently_with_some_products_unavailable(shop):
    catalog.load(shop)
    products = Product.objects.filter(brand=shop)
    assert products.count() == len(catalog.PRODUCTS) >= 30
    assert {"Laptop", "Monitor", "Accessory"} <= set(products.values_list("category", flat=True))
    assert products.filter(availability=False).exists()
