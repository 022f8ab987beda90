"""Prometheus metrics at ``/metrics``: requests and latencies by route,
plus process RSS and CPU (prometheus_client's process collector).

Each gateway process answers with its own figures; the KPI gate samples
whole process trees with psutil instead, so multi-process serving does not
need prometheus_client's multiprocess mode.
"""
from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from gateway.fair_share import ADMIT, TRANSACTION

STARTED_KEY = "apprun.started"


def fair_share_outcome(point: str, idle: bool) -> str:
    """turn: it got an idle hub; refused: its first wait ran out (429);
    went_on: a later wait ran out and the request went on."""
    return "turn" if idle else ("refused" if point == ADMIT else "went_on")


FAIR_SHARE_OUTCOMES = [(point, fair_share_outcome(point, idle)) for point in (ADMIT, TRANSACTION)
                       for idle in (True, False)]
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter("apprun_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("apprun_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.wasm_compile = Histogram("apprun_wasm_cold_start_seconds",
                                      "WASM cold start: module load (compile or deserialize) + instantiate",
                                      buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
                                      registry=self.registry)
        self.wasm_placement = Counter("apprun_wasm_calls", "WASM calls by where they ran: inline (on the "
                                      "gevent hub), pool (native threads), inline_cut (an inline attempt "
                                      "that reached its slice; the call then ran in the pool)",
                                      ["placement"], registry=self.registry)
        self.fair_share_waits = Counter(
            "apprun_fair_share_waits", "Waits of a tenant over its share of the hub (gateway/fair_share.py), by "
            "point (admit: before its route; transaction: before a database transaction) and outcome (turn: it "
            "got an idle hub; refused: 429 fair_share; went_on: a transaction's wait ran out and it went on)",
            ["point", "outcome"], registry=self.registry)
        for point, outcome in FAIR_SHARE_OUTCOMES:  # every series from the start, at 0
            self.fair_share_waits.labels(point, outcome)
        self.fair_share_wait = Histogram("apprun_fair_share_wait_seconds", "How long each fair-share wait lasted",
                                         ["point"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.wasm_call = Histogram("apprun_wasm_hot_call_seconds", "WASM hot call (instantiate + export call)",
                                   buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.05),
                                   registry=self.registry)

    def record_fair_share_wait(self, point: str, idle: bool, seconds: float) -> None:
        """FairShare's ``on_wait``: one wait of a tenant over its share."""
        self.fair_share_waits.labels(point, fair_share_outcome(point, idle)).inc()
        self.fair_share_wait.labels(point).observe(seconds)


def init_app(app: Flask) -> None:
    metrics = GatewayMetrics()
    app.extensions["apprun.metrics"] = metrics

    # The start time travels in the WSGI environ, set by a wrapper around
    # the app: cheaper than a before_request hook writing to ``g``.
    inner_wsgi_app = app.wsgi_app

    def timed_wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
        environ[STARTED_KEY] = time.perf_counter()
        return inner_wsgi_app(environ, start_response)

    app.wsgi_app = timed_wsgi_app  # type: ignore[method-assign]

    # labels() resolves a child under a lock on every call; routes x methods
    # x statuses is a small set, so the children are looked up once.
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    @app.after_request
    def _record(response: Response) -> Response:
        current = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not four
        started = current.environ.get(STARTED_KEY)
        if started is not None:
            rule = current.url_rule
            key = (rule.rule if rule is not None else "<unmatched>", current.method, response.status_code)
            pair = children.get(key)
            if pair is None:
                pair = children[key] = (metrics.requests.labels(key[0], key[1], str(key[2])),
                                        metrics.latency.labels(key[0], key[1]))
            pair[0].inc()
            pair[1].observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)
