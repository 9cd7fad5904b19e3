"""`GET /`, `/healthz`, `/brands/active` as SPEC.md says."""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_root_answers_json_to_programs_and_html_to_browsers(client, techpro):
    status = client.get("/", HTTP_ACCEPT="application/json").json()
    assert status["status"] == "running" and status["active_brands"] == 1
    assert client.get("/").json()["status"] == "running"  # no Accept header: a program
    page = client.get("/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert page["Content-Type"].startswith("text/html") and b"TechPro Solutions" in page.content


def test_active_brands_lists_id_name_and_description(client, techpro):
    from flows.models import Brand

    Brand.objects.create(slug="gone", name="Gone", is_active=False)
    brands = client.get("/brands/active").json()
    assert [b["id"] for b in brands] == ["techpro"]
    assert {"id", "name", "description"} <= brands[0].keys()


def test_health_is_ok_only_with_a_worker(client, worker):
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": True, "redis": True, "workers": True}
