"""JSON responses through orjson say what Flask's default provider said."""
from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from flask import Flask, jsonify
from flask.json.provider import DefaultJSONProvider

from gateway import jsonio


@dataclasses.dataclass
class Point:
    x: int
    y: str


VALUES = [
    {"b": 1, "a": [1.5, None, True, "é€"]},
    {"when": datetime(2026, 11, 23, 12, 30, tzinfo=UTC), "day": date(2026, 1, 2)},
    {"id": uuid.UUID(int=7), "price": Decimal("12.50"), "point": Point(1, "y")},
    {"huge": 2 ** 70, 1: "int key"},
    [],
    "text",
]


def response_with(provider: type, value) -> tuple[int, str, object]:
    app = Flask("t")
    app.json = provider(app)
    app.json.sort_keys = False
    with app.app_context():
        response = jsonify(value)
        return response.status_code, response.mimetype, json.loads(response.get_data())


@pytest.mark.parametrize("value", VALUES)
def test_same_json_as_flask_default(value) -> None:
    assert response_with(jsonio.OrjsonProvider, value) == response_with(DefaultJSONProvider, value)


def test_key_order_is_kept_and_dumps_matches() -> None:
    app = Flask("t")
    jsonio.init_app(app)
    with app.app_context():
        assert jsonify(z=1, a=2).get_data() == b'{"z":1,"a":2}\n'
        assert app.json.dumps({"b": 1, "a": 2}) == '{"b":1,"a":2}'
        assert json.loads(app.json.dumps({"x": 1}, indent=2)) == {"x": 1}


def test_gateway_answers_through_orjson(app, client) -> None:
    assert isinstance(app.json, jsonio.OrjsonProvider)
    assert client.get("/healthz").get_data() == b'{"status":"ok"}\n'
