"""Comparison with an earlier run (``--baseline reports/<ts>/summary.json``)
and the optional ``regression:`` section of thresholds.yaml:

    regression:
      "http_req_duration p(95)": 20%     # worse than the baseline by > 20 %: FAIL (exit 3)

This catches a slow drift that stays under the absolute KPI.  "Worse"
follows the KPI's own threshold: higher for ``<``/``<=``, lower for
``>``/``>=``.  Pure; no Locust.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpi.percentiles import MEASURED_DECIMALS

if TYPE_CHECKING:   # kpi.evaluate imports kpi.thresholds, which parses the rules here
    from kpi.evaluate import Verdict

REGRESSION_KEY_RE = re.compile(r"^(?P<metric>\S+)\s+(?P<aggregation>p\(\d+(?:\.\d+)?\)|[a-z]+)$")
LIMIT_RE = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?)\s*%?\s*$")


class BaselineError(ValueError):
    pass


@dataclass(frozen=True)
class RegressionRule:
    metric: str            # a KPI key as in metrics:, e.g. 'http_req_duration{name:/x}'
    aggregation: str       # as the expression starts, e.g. 'p(95)', 'avg', 'rps'
    limit_percent: float

    @property
    def key(self) -> str:
        return f"{self.metric} {self.aggregation}"


@dataclass(frozen=True)
class Delta:
    metric: str
    threshold: str
    baseline: float | None
    measured: float | None
    change_percent: float | None          # + is higher than the baseline
    worse_percent: float | None           # + is worse, by the KPI's direction; None: no direction
    limit_percent: float | None = None    # a regression: rule applies
    regressed: bool = False

    def describe(self) -> str:
        if self.change_percent is None:
            return "no baseline figure"
        text = f"{self.change_percent:+.1f} % vs baseline {self.baseline:g}"
        if self.limit_percent is not None:
            text += f" ({'REGRESSION' if self.regressed else 'ok'}: worse by at most {self.limit_percent:g} %)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "threshold": self.threshold, "baseline": self.baseline,
                "measured": self.measured, "change_percent": self.change_percent,
                "worse_percent": self.worse_percent, "limit_percent": self.limit_percent,
                "regressed": self.regressed}


def parse_rules(data: Any, metric_keys: set[str]) -> list[RegressionRule]:
    """``regression:`` -> rules; each must name a KPI judged in metrics:."""
    if data is None:
        return []
    if not isinstance(data, dict):
        raise BaselineError("'regression' must map '<metric> <aggregation>' to a percentage, e.g. "
                            "\"http_req_duration p(95)\": 20%")
    rules = []
    for key, limit in data.items():
        match = REGRESSION_KEY_RE.match(str(key).strip())
        if not match:
            raise BaselineError(f"regression: cannot parse {key!r}; expected '<metric> <aggregation>', "
                                "e.g. 'http_req_duration p(95)'")
        if match.group("metric") not in metric_keys:
            raise BaselineError(f"regression: {match.group('metric')!r} is not a KPI in metrics:")
        value = LIMIT_RE.match(str(limit))
        if isinstance(limit, bool) or not value:
            raise BaselineError(f"regression: {key}: {limit!r} is not a percentage like 20%")
        rules.append(RegressionRule(match.group("metric"), match.group("aggregation"), float(value.group("value"))))
    return rules


def load(path: str | Path) -> dict[tuple[str, str], float | None]:
    """A run's summary.json -> {(metric, threshold): measured}."""
    try:
        data = json.loads(Path(path).read_text())
        return {(k["metric"], k["threshold"]): k["measured"] for k in data["kpis"]}
    except FileNotFoundError:
        raise BaselineError(f"baseline {path} does not exist") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BaselineError(f"baseline {path} is not a summary.json of this gate ({exc})") from None


def _direction(threshold: str) -> int:
    """+1 when higher is worse (``<``), -1 when lower is worse (``>``), 0 otherwise."""
    if re.search(r"<=?", threshold):
        return 1
    if re.search(r">=?", threshold):
        return -1
    return 0


def compare(verdicts: list[Verdict], baseline: dict[tuple[str, str], float | None],
            rules: list[RegressionRule]) -> list[Delta]:
    """Each KPI's change against the baseline, judged by the rules."""
    deltas = []
    for verdict in verdicts:
        before = baseline.get((verdict.key, verdict.expression))
        rule = next((r for r in rules if r.metric == verdict.key and verdict.expression.startswith(r.aggregation)),
                    None)
        if before is None or verdict.measured is None:
            # A rule with nothing to compare cannot show a regression; the KPI itself still judges.
            deltas.append(Delta(verdict.key, verdict.expression, before, verdict.measured, None, None,
                                rule.limit_percent if rule else None))
            continue
        change = (verdict.measured - before) / abs(before) * 100 if before else (0.0 if verdict.measured == before
                                                                                 else float("inf"))
        direction = _direction(verdict.expression)
        worse = change * direction if direction else None
        regressed = rule is not None and worse is not None and worse > rule.limit_percent
        deltas.append(Delta(verdict.key, verdict.expression, before, verdict.measured,
                            round(change, MEASURED_DECIMALS),
                            None if worse is None else round(worse, MEASURED_DECIMALS),
                            rule.limit_percent if rule else None, regressed))
    return deltas


def regressions(deltas: list[Delta]) -> list[Delta]:
    return [d for d in deltas if d.regressed]
