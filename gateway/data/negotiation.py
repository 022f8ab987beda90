"""Which representation a data response takes, from the ``Accept`` header,
as PostgREST negotiates it: a JSON array (the default), a single JSON object
(``application/vnd.pgrst.object+json``) or CSV (``text/csv``), each JSON form
optionally with ``nulls=stripped``."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from gateway.errors import ApiError

ARRAY = "json"
OBJECT = "object"
CSV = "csv"
_MEDIA_TYPES = {
    "application/json": ARRAY,
    "application/vnd.pgrst.array+json": ARRAY,
    "application/*": ARRAY,
    "*/*": ARRAY,
    "application/vnd.pgrst.object+json": OBJECT,
    "application/vnd.pgrst.object": OBJECT,
    "text/csv": CSV,
    "text/*": CSV,
}
CONTENT_TYPES = {ARRAY: "application/json; charset=utf-8", OBJECT: "application/vnd.pgrst.object+json; charset=utf-8",
                 CSV: "text/csv; charset=utf-8"}


@dataclass(frozen=True)
class ResponseFormat:
    kind: str = ARRAY
    strip_nulls: bool = False

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.kind]


def negotiate(accept: str | None) -> ResponseFormat:
    """The first acceptable media range, by quality then order; 406 when
    the client accepts none of the representations above."""
    if not accept or not accept.strip():
        return ResponseFormat()
    ranges: list[tuple[float, int, str, dict[str, str]]] = []
    for position, item in enumerate(accept.split(",")):
        media, *raw_params = (part.strip() for part in item.split(";"))
        params = {}
        for raw in raw_params:
            key, _, value = raw.partition("=")
            params[key.strip().lower()] = value.strip().strip('"').lower()
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 1.0
        if quality > 0 and media:
            ranges.append((-quality, position, media.lower(), params))
    for _, _, media, params in sorted(ranges):
        kind = _MEDIA_TYPES.get(media)
        if kind is not None:
            return ResponseFormat(kind, kind != CSV and params.get("nulls") == "stripped")
    raise ApiError(406, "PGRST107", "None of these media types are available: " + accept[:200],
                   hint="accept application/json, application/vnd.pgrst.object+json or text/csv")


def rows_as_csv(body: str, names: list[str]) -> str:
    """RFC 4180 CSV: a header, then one line per row.  ``body`` is a JSON
    array of rows, each an array of PostgreSQL's text output of its columns
    (as PostgREST's CSV); NULL is an empty field."""
    rows: list[list[str | None]] = json.loads(body)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
    return out.getvalue()
