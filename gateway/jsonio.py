"""JSON responses encoded with orjson (several times faster than the stdlib
for the small bodies the gateway answers with).

The output is the same JSON as Flask's default provider gives, value for
value: dates still go through Flask's own ``default`` (RFC 822 HTTP dates),
and so do UUIDs, Decimals and dataclasses; keys keep their insertion
order.  Non-ASCII text is sent as UTF-8 instead of ``\\uXXXX`` escapes (the
same JSON text).  Parsing is left to the standard library: request bodies
(gateway/bodies.py) keep accepting integers of any size.
"""
from __future__ import annotations

from typing import Any

import orjson
from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider

OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs.keys() - {"separators"}:  # indent, sort_keys...: the stdlib path
            return super().dumps(obj, **kwargs)
        return self.encode(obj).decode()

    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, default=self.default, option=OPTIONS)
        except orjson.JSONEncodeError:
            # What orjson refuses and the stdlib accepts (integers beyond
            # 64 bits): answer exactly as Flask's default would.
            return super().dumps(obj, separators=(",", ":")).encode()

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if self._app.debug or self.compact is False:
            return super().response(*args, **kwargs)
        body = self.encode(self._prepare_response_obj(args, kwargs)) + b"\n"
        return self._app.response_class(body, mimetype=self.mimetype)


def init_app(app: Flask) -> None:
    app.json = OrjsonProvider(app)
