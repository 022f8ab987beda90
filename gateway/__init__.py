"""The apprun gateway.  ``create_app`` is imported lazily so that
``python -m gateway`` can monkey-patch with gevent before Flask and
psycopg2 are imported."""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    raise AttributeError(name)
