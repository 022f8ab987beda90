"""Every error is JSON with the same shape; no stack traces."""
from __future__ import annotations

from tests.conftest import auth

SHAPE = {"code", "message", "details", "hint"}


def test_404_405_413_are_json(app, client, tokens) -> None:
    assert client.get("/nowhere").get_json().keys() == SHAPE
    not_allowed = client.put("/healthz")
    assert not_allowed.status_code == 405 and not_allowed.get_json()["code"] == "method_not_allowed"
    big = "x" * (app.config["APPRUN_SETTINGS"].max_body_bytes + 10)
    too_large = client.post("/data/products", data=big, content_type="application/json",
                            headers=auth(tokens["alice"]))
    assert too_large.status_code == 413 and too_large.get_json().keys() == SHAPE


def test_health_ready_metrics(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json()["status"] == "ready"
    text = client.get("/metrics").get_data(as_text=True)
    assert "apprun_http_requests_total" in text and "process_resident_memory_bytes" in text


def test_unexpected_errors_hide_internals(app_config) -> None:
    from gateway.app import create_app

    broken = create_app(dict(app_config, database_url="postgresql://nobody:x@127.0.0.1:1/none"))
    client = broken.test_client()
    response = client.post("/auth/login", json={"email": "a@b.co", "password": "whatever-long"})
    assert response.status_code == 503
    assert "Traceback" not in response.get_data(as_text=True)
    assert client.get("/readyz").status_code == 503
