"""``thresholds.yaml``: KPIs as k6-style expressions, parsed and checked.

    warmup_s: 10                   # samples before this are not judged
    abort_on_fail: {enabled: false, delay_s: 30}
    metrics:
      http_req_duration: ["p(95) < 200"]
      "http_req_duration{name:/data/products [list],method:GET}": ["p(95) < 150"]
      "http_req_duration{tenant:tenant-2}": ["p(95) < 200"]
      http_reqs: ["rps > 500"]

A metric name that is not known, an aggregation a metric does not offer or
an expression that does not parse is a ``ThresholdsError`` at start-up.
"""
from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kpi.baseline import BaselineError, RegressionRule, parse_rules
from kpi.validity import DEFAULT_BUDGETS, ValidityError, parse_budgets

#: metric -> aggregations it offers
METRICS: dict[str, set[str]] = {
    "http_req_duration": {"p", "avg", "min", "max", "med"},   # ms, per request: service time
    "http_req_latency": {"p", "avg", "min", "max", "med"},    # ms, per request: from its due time to its end
    "http_reqs": {"rps", "count"},
    "http_req_failed": {"rate", "count"},
    "sut_memory_mb": {"max", "avg", "min", "med", "p"},        # whole stack, sampled
    "sut_cpu_percent": {"max", "avg", "min", "med", "p"},      # whole stack, % of the whole machine
    "sut_cpu_cores": {"max", "avg", "min", "med", "p"},        # whole stack, cores (docker stats: 1.0 = one core)
    "isolation_violations": {"count"},
    "rbac_violations": {"count"},
    "lost_writes": {"count"},
    "workflow_failures": {"count"},
    "dropped_iterations": {"count"},                          # sends due within the run, never made
    "auth_checks_per_s": {"value"},
    "wasm_cold_start_ms": {"value", "max", "avg", "med", "p"},
    "wasm_hot_us": {"med", "avg", "p", "max", "min"},         # server-side (X-Function-Duration-Us)
    "wasm_invoke_ms": {"med", "avg", "p", "max", "min"},      # the HTTP round trip of the same calls
    # The noisy profile's fairness figures (kpi/tenants.py); no samples in other profiles.
    "tenant_p95_ratio": {"value"},     # the worst quiet tenant's p95 during the burst / before it
    "quiet_429": {"count"},            # the quiet tenants' requests refused with 429, whole run
    "noisy_429": {"count"},            # the noisy tenant's, whole run (expected; not failures)
    "burst_reached": {"value"},        # the noisy tenant's req/s during the burst / before it
}
TAGGABLE = {"http_req_duration", "http_req_latency", "http_reqs", "http_req_failed"}
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
EXPRESSION_RE = re.compile(r"^\s*(?P<agg>p\((?P<pct>\d+(?:\.\d+)?)\)|[a-z]+)\s*(?P<op><=|>=|==|!=|<|>)\s*"
                           r"(?P<value>-?\d+(?:\.\d+)?)\s*$")
METRIC_KEY_RE = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)(?:\{(?P<tags>[^}]*)\})?$")
TAG_KEYS = {"name", "method", "tenant"}


class ThresholdsError(ValueError):
    pass


@dataclass(frozen=True)
class Expression:
    text: str
    aggregation: str          # "p", "avg", ...
    percentile: float | None  # for p(N)
    op: str
    target: float

    def holds(self, measured: float) -> bool:
        return OPERATORS[self.op](measured, self.target)


@dataclass(frozen=True)
class Threshold:
    key: str                       # as written, e.g. 'http_req_duration{name:/x}'
    metric: str
    tags: tuple[tuple[str, str], ...]
    expressions: tuple[Expression, ...]


@dataclass
class Thresholds:
    entries: list[Threshold]
    warmup_s: float = 0.0
    abort_on_fail: bool = False
    abort_delay_s: float = 0.0
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    validity: dict[str, float | None] = field(default_factory=lambda: dict(DEFAULT_BUDGETS))
    regression: list[RegressionRule] = field(default_factory=list)

    def target(self, metric: str, aggregation: str) -> float | None:
        """The first target for an untagged metric/aggregation (load shapes use rps)."""
        for entry in self.entries:
            if entry.metric == metric and not entry.tags:
                for expression in entry.expressions:
                    if expression.aggregation == aggregation:
                        return expression.target
        return None


def parse_expression(metric: str, text: Any) -> Expression:
    if not isinstance(text, str):
        raise ThresholdsError(f"{metric}: expression {text!r} must be a string like 'p(95) < 200'")
    match = EXPRESSION_RE.match(text)
    if not match:
        raise ThresholdsError(f"{metric}: cannot parse {text!r}; expected '<aggregation> <op> <number>', "
                              f"e.g. 'p(95) < 200'")
    aggregation = "p" if match.group("pct") else match.group("agg")
    percentile = float(match.group("pct")) if match.group("pct") else None
    if percentile is not None and not 0 < percentile <= 100:
        raise ThresholdsError(f"{metric}: percentile {percentile} must be in (0, 100]")
    if aggregation not in METRICS[metric]:
        raise ThresholdsError(f"{metric}: unknown aggregation '{aggregation}'; offers {sorted(METRICS[metric])}")
    return Expression(text.strip(), aggregation, percentile, match.group("op"), float(match.group("value")))


def parse_metric_key(key: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    match = METRIC_KEY_RE.match(key.strip())
    if not match:
        raise ThresholdsError(f"cannot parse metric key {key!r}; expected name or name{{tag:value,...}}")
    name = match.group("name")
    if name not in METRICS:
        raise ThresholdsError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    tags: list[tuple[str, str]] = []
    if match.group("tags"):
        if name not in TAGGABLE:
            raise ThresholdsError(f"{name} cannot be filtered by tags")
        for part in match.group("tags").split(","):
            tag, sep, value = part.partition(":")
            if not sep or tag.strip() not in TAG_KEYS or not value.strip():
                raise ThresholdsError(f"{key}: tags are name:<request name>, method:<HTTP method> and "
                                      "tenant:<tenant tag, e.g. tenant-1>")
            tags.append((tag.strip(), value.strip()))
    return name, tuple(sorted(tags))


def parse(data: Any, source: str = "") -> Thresholds:
    if not isinstance(data, dict):
        raise ThresholdsError(f"{source or 'thresholds'}: top level must be a mapping")
    unknown = set(data) - {"warmup_s", "abort_on_fail", "metrics", "validity", "regression"}
    if unknown:
        raise ThresholdsError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise ThresholdsError("'metrics' must be a non-empty mapping of metric -> [expressions]")
    entries = []
    for key, expressions in metrics.items():
        name, tags = parse_metric_key(str(key))
        if isinstance(expressions, str):
            expressions = [expressions]
        if not isinstance(expressions, list) or not expressions:
            raise ThresholdsError(f"{key}: give a list of expressions")
        entries.append(Threshold(str(key), name, tags, tuple(parse_expression(name, e) for e in expressions)))
    warmup = data.get("warmup_s", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or warmup < 0:
        raise ThresholdsError("'warmup_s' must be a non-negative number")
    abort = data.get("abort_on_fail") or {}
    if not isinstance(abort, dict) or set(abort) - {"enabled", "delay_s"}:
        raise ThresholdsError("'abort_on_fail' takes {enabled: bool, delay_s: number}")
    try:
        validity = parse_budgets(data.get("validity"))
    except ValidityError as exc:
        raise ThresholdsError(str(exc)) from None
    try:
        regression = parse_rules(data.get("regression"), {entry.key for entry in entries})
    except BaselineError as exc:
        raise ThresholdsError(str(exc)) from None
    return Thresholds(entries, float(warmup), bool(abort.get("enabled", False)), float(abort.get("delay_s", 0)),
                      source, data, validity, regression)


def load(path: str | Path) -> Thresholds:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ThresholdsError(f"thresholds file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ThresholdsError(f"{path} is not valid YAML: {exc}") from None
    return parse(data, str(path))
