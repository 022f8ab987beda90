"""Is the measurement itself trustworthy?  Budgets for the load generator
and the machine during the judged window; a breach makes the verdict
INCONCLUSIVE (exit 4) whatever the KPIs say.

The generator shares the machine with the system under test.  When a
Locust process is saturated, or its event loop wakes late, the latency it
measures includes its own scheduling delay; when the whole machine is
saturated, the stack and the generator compete for the same cores.  The
figure is then neither a pass nor a fail of the system under test.

Pure: over per-second gauges (kpi/collector.py) and the budgets
(thresholds.yaml ``validity:``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kpi.percentiles import MEASURED_DECIMALS, list_percentile

# Gauge names (kpi/generator.py records them; "<name>|<process>").
GENERATOR_CPU = "generator_cpu_percent"        # one Locust process, % of one core, each second
GENERATOR_LAG = "generator_loop_lag_ms"        # how late a 10 ms sleep woke, every wake-up
MACHINE_CPU = "machine_cpu_percent"            # the whole machine (all cores = 100), each second
LAG_PERCENTILE = 99.0

#: budget -> (default, what it bounds); a budget of null in thresholds.yaml is not judged.
DEFAULT_BUDGETS: dict[str, float] = {
    GENERATOR_CPU: 85.0,      # avg CPU of each Locust process, % of one core
    GENERATOR_LAG: 20.0,      # p(99) event-loop lag of each Locust process, ms
    MACHINE_CPU: 97.0,        # avg CPU of the whole machine, % of all cores
}
DESCRIPTIONS = {
    GENERATOR_CPU: "avg CPU of the Locust process, % of one core",
    GENERATOR_LAG: f"p({LAG_PERCENTILE:g}) event-loop lag of the Locust process, ms",
    MACHINE_CPU: "avg CPU of the whole machine, % of all cores",
}


class ValidityError(ValueError):
    pass


def parse_budgets(data: Any) -> dict[str, float | None]:
    """``validity:`` of thresholds.yaml: {budget: number or null}; the
    defaults fill in what is not given."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidityError("'validity' must be a mapping of budget -> number (or null: not judged)")
    unknown = set(data) - set(DEFAULT_BUDGETS)
    if unknown:
        raise ValidityError(f"unknown validity budget(s): {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(DEFAULT_BUDGETS)}")
    budgets: dict[str, float | None] = dict(DEFAULT_BUDGETS)
    for name, value in data.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ValidityError(f"validity.{name} must be a positive number or null, not {value!r}")
        budgets[name] = None if value is None else float(value)
    return budgets


@dataclass(frozen=True)
class ValidityCheck:
    budget_name: str
    where: str                    # the process ("worker 1234") or "machine"
    measured: float | None        # None: no samples in the window
    budget: float | None          # None: not judged

    @property
    def ok(self) -> bool:
        return self.budget is None or self.measured is None or self.measured < self.budget

    def describe(self) -> str:
        measured = "not measured" if self.measured is None else f"{self.measured:g}"
        limit = "not judged" if self.budget is None else f"budget {self.budget:g}"
        return f"{self.budget_name} ({self.where}) {measured}, {limit}"

    def to_json(self) -> dict[str, Any]:
        return {"budget_name": self.budget_name, "where": self.where, "measured": self.measured,
                "budget": self.budget, "ok": self.ok, "description": DESCRIPTIONS[self.budget_name]}


def _split(key: str) -> tuple[str, str]:
    name, _, where = key.partition("|")
    return name, where or "machine"


def judge(gauges: Mapping[str, Sequence[float]], budgets: Mapping[str, float | None]) -> list[ValidityCheck]:
    """One check per budget and process (or the machine) that has samples in
    the window, in a stable order."""
    checks = []
    for key in sorted(gauges):
        name, where = _split(key)
        values = list(gauges[key])
        if name not in DEFAULT_BUDGETS or not values:
            continue
        if name == GENERATOR_LAG:
            measured = list_percentile(values, LAG_PERCENTILE)
        else:
            measured = sum(values) / len(values)
        measured = None if measured is None else round(measured, MEASURED_DECIMALS)
        checks.append(ValidityCheck(name, where, measured, budgets.get(name)))
    return checks


def breaches(checks: Sequence[ValidityCheck]) -> list[ValidityCheck]:
    return [check for check in checks if not check.ok]


def cause(checks: Sequence[ValidityCheck]) -> str:
    """What made the run inconclusive, for the console, the tab and the report."""
    return "; ".join(f"{c.budget_name} ({c.where}) {c.measured:g} >= budget {c.budget:g}"
                     for c in breaches(checks))
