"""The seed's JSON flow format: import, export, the commands and the admin."""

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from flows.models import Flow, FlowVersion
from flows.services import flow_export

SEED_PATH = Path(__file__).resolve().parents[2] / "flows" / "demo" / "language-flow.json"


def test_import_then_export_gives_back_the_same_json(techpro):
    flow = Flow.objects.get(brand=techpro, is_active=True)
    exported = flow_export(flow)
    assert json.loads(exported) == json.loads(SEED_PATH.read_text())
    assert list(json.loads(exported)) == list(json.loads(SEED_PATH.read_text()))  # state order kept
    assert exported.strip() == SEED_PATH.read_text().strip()  # byte for byte, formatting included


def test_the_commands_round_trip_a_flow_file(techpro, tmp_path):
    out = io.StringIO()
    call_command("export_flow", "--brand", "techpro", stdout=out)
    path = tmp_path / "flow.json"
    path.write_text(out.getvalue())
    call_command("import_flow", str(path), "--brand", "techpro", "--name", "Language flow", stdout=io.StringIO())
    again = io.StringIO()
    call_command("export_flow", "--brand", "techpro", stdout=again)
    assert again.getvalue() == out.getvalue()
    assert FlowVersion.objects.filter(flow__brand=techpro).count() == 2


def test_importing_a_broken_flow_changes_nothing(techpro, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"start": {"sendRequest": {"kind": "BotText", "content": "x"}, "next": "missing"}}))
    with pytest.raises(CommandError, match="`next` names no state"):
        call_command("import_flow", str(path), "--brand", "techpro", "--name", "Language flow")
    assert FlowVersion.objects.filter(flow__brand=techpro).count() == 1


def test_staff_import_and_export_flows_in_the_admin(techpro, admin_client):
    upload = io.BytesIO(SEED_PATH.read_bytes())
    upload.name = "flow.json"
    response = admin_client.post("/admin/flows/flow/import/", {"brand": techpro.pk, "name": "Uploaded", "file": upload})
    assert response.status_code == 302
    flow = Flow.objects.get(brand=techpro, name="Uploaded")
    assert flow.is_active and flow.published_version is not None
    download = admin_client.get(f"/admin/flows/flow/{flow.pk}/export/")
    assert download["Content-Disposition"].startswith("attachment")
    assert json.loads(download.content) == json.loads(SEED_PATH.read_text())


def test_the_admin_refuses_an_upload_that_is_not_a_flow(techpro, admin_client):
    upload = io.BytesIO(b'{"a": {"next": "b"}}')
    upload.name = "flow.json"
    response = admin_client.post("/admin/flows/flow/import/", {"brand": techpro.pk, "name": "Bad", "file": upload})
    assert response.status_code == 200
    assert "needs `sendRequest` or `matchResponse`" in response.content.decode()
    assert not Flow.objects.filter(name="Bad").exists()


def _state_form_data(flow: Flow, overrides: dict[str, dict]) -> dict:
    """The admin change form for `flow`, as a browser would post it back."""
    states = list(flow.states.all())
    data = {
        "brand": flow.brand_id,
        "name": flow.name,
        "is_active": "on",
        "states-TOTAL_FORMS": len(states),
        "states-INITIAL_FORMS": len(states),
        "states-MIN_NUM_FORMS": 0,
        "states-MAX_NUM_FORMS": 1000,
        "versions-TOTAL_FORMS": 0,
        "versions-INITIAL_FORMS": 0,
        "versions-MIN_NUM_FORMS": 0,
        "versions-MAX_NUM_FORMS": 1000,
    }
    for index, state in enumerate(states):
        values = {
            "id": state.pk,
            "flow": flow.pk,
            "position": state.position,
            "name": state.name,
            "next": state.next,
            "send_request": json.dumps(state.send_request),
            "match_response": json.dumps(state.match_response),
            "extra": json.dumps(state.extra),
        }
        values.update(overrides.get(state.name, {}))
        for key, value in values.items():
            data[f"states-{index}-{key}"] = value
    return data


def test_saving_the_flow_in_the_admin_publishes_a_new_version(techpro, admin_client):
    flow = Flow.objects.get(brand=techpro, is_active=True)
    greeting = json.dumps({"kind": "BotText", "content": "Hello from TechPro!"})
    response = admin_client.post(
        f"/admin/flows/flow/{flow.pk}/change/", _state_form_data(flow, {"greetings": {"send_request": greeting}})
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    flow.refresh_from_db()
    assert flow.published_version.number == 2
    assert flow.published_version.definition["greetings"]["sendRequest"]["content"] == "Hello from TechPro!"


def test_the_admin_refuses_a_flow_with_a_dangling_next(techpro, admin_client):
    flow = Flow.objects.get(brand=techpro, is_active=True)
    response = admin_client.post(
        f"/admin/flows/flow/{flow.pk}/change/", _state_form_data(flow, {"done": {"next": "nowhere"}})
    )
    assert response.status_code == 200
    assert "`next` names no state" in response.content.decode()
    flow.refresh_from_db()
    assert flow.published_version.number == 1


def test_staff_html_in_bot_texts_is_sanitized_when_published(techpro, admin_client):
    flow = Flow.objects.get(brand=techpro, is_active=True)
    greeting = json.dumps({"kind": "BotText", "content": "<b>Hi</b><script>alert(1)</script><img src=x onerror=y>"})
    admin_client.post(
        f"/admin/flows/flow/{flow.pk}/change/", _state_form_data(flow, {"greetings": {"send_request": greeting}})
    )
    flow.refresh_from_db()
    assert flow.published_version.definition["greetings"]["sendRequest"]["content"] == "<b>Hi</b>"
