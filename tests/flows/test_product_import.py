import json

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from flows.models import Product

CSV = "\n".join(
    [
        "id,name,description,category,price,features,specifications,availability",
        'laptop-100,Zephyr Book 14,A light laptop for travel.,Laptop,12999000,"Intel Core i5; 16GB RAM",'
        '"processor: i5-1335U; storage: 512GB SSD",yes',
        'monitor-100,Vista 27 4K,A 4K monitor.,Monitor,5499000.50,"[""4K"", ""USB-C""]","{""panel"": ""IPS""}",no',
        "",
    ]
)


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "products.csv"
    path.write_text(CSV)
    return path


def test_the_command_imports_csv_with_the_seeds_fields(techpro, csv_file, capsys):
    call_command("import_products", str(csv_file), "--brand", "techpro")
    book = Product.objects.get(brand=techpro, external_id="laptop-100")
    assert book.as_wire() == {
        "id": "laptop-100", "name": "Zephyr Book 14", "description": "A light laptop for travel.",
        "category": "Laptop", "price": 12999000.0, "features": ["Intel Core i5", "16GB RAM"],
        "specifications": {"processor": "i5-1335U", "storage": "512GB SSD"}, "availability": True,
    }  # fmt: skip
    vista = Product.objects.get(brand=techpro, external_id="monitor-100")
    assert vista.features == ["4K", "USB-C"] and vista.specifications == {"panel": "IPS"}
    assert vista.availability is False and float(vista.price) == 5499000.5
    assert "2 created, 0 updated" in capsys.readouterr().out


def test_importing_again_updates_by_id_instead_of_duplicating(techpro, csv_file, tmp_path):
    call_command("import_products", str(csv_file), "--brand", "techpro")
    update = tmp_path / "update.json"
    update.write_text(json.dumps([{"id": "laptop-100", "name": "Zephyr Book 14 (2025)", "price": 11999000,
                                   "availability": False}]))  # fmt: skip
    call_command("import_products", str(update), "--brand", "techpro")
    assert Product.objects.filter(brand=techpro).count() == 2
    book = Product.objects.get(brand=techpro, external_id="laptop-100")
    assert book.name == "Zephyr Book 14 (2025)" and book.availability is False


def test_one_bad_row_imports_nothing_and_names_the_row(techpro, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"products": [{"id": "ok-1", "name": "Fine", "price": 1},
                                            {"id": "bad-1", "name": "Broken", "price": "cheap"}]}))  # fmt: skip
    with pytest.raises(CommandError, match=r"row 2 \(bad-1\): price 'cheap' is not a number"):
        call_command("import_products", str(bad), "--brand", "techpro")
    assert not Product.objects.exists()


def test_an_unknown_brand_is_an_error(db, csv_file):
    with pytest.raises(CommandError, match="no brand"):
        call_command("import_products", str(csv_file), "--brand", "nope")


def test_staff_upload_a_catalog_in_the_admin(techpro, client):
    staff = get_user_model().objects.create_superuser("alice", "alice@example.com", "pw-alice")
    client.force_login(staff)
    page = client.get("/admin/flows/product/")
    assert b"Import CSV / JSON" in page.content
    upload = SimpleUploadedFile("products.csv", CSV.encode(), content_type="text/csv")
    response = client.post("/admin/flows/product/import/", {"brand": techpro.pk, "file": upload})
    assert response.status_code == 302
    assert Product.objects.filter(brand=techpro).count() == 2
    broken = SimpleUploadedFile("products.csv", b"id,name,price\nx-1,,5\n", content_type="text/csv")
    response = client.post("/admin/flows/product/import/", {"brand": techpro.pk, "file": broken})
    assert response.status_code == 200 and b"row 1 (x-1): `name` is required" in response.content
