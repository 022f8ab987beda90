"""The gate in Locust's web UI: a "KPIs" tab (Locust's extended tabs, fed
through /stats/requests), result colours, the pre-flight's progress, and
pages of our own: /kpi (Jinja template) and /kpi.json for scripts."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jinja2

from kpi import baseline, live, tenants, windows
from kpi.baseline import Delta
from kpi.evaluate import Verdict, measured_text
from kpi.state import RunState
from kpi.thresholds import Thresholds
from kpi.validity import ValidityCheck, breaches, cause

log = logging.getLogger("apprun.kpi")

KPI_TAB_KEY = "apprun-kpis"
# Locust's runner states (locust.runners.STATE_INIT / STATE_SPAWNING), as
# strings: importing Locust here would monkey-patch the unit tests' process.
STATE_INIT, STATE_SPAWNING = "ready", "spawning"
RESULTS = ("PASS", "FAIL", "UNDECIDED", "INCONCLUSIVE")
TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                               autoescape=jinja2.select_autoescape(["html"]))


def tab_rows(verdicts: list[Verdict], thresholds: Thresholds, run: RunState,
             validity: list[ValidityCheck] | None = None, deltas: list[Delta] | None = None,
             tenant_rows: list[dict] | None = None) -> list[dict[str, str]]:
    """The KPIs tab's rows: one per verdict, one per tenant (kpi/tenants.py),
    the measurement's validity, then what the tab judges."""
    rows = []
    if run.preflight_running:
        rows.append({"kpi": "(pre-flight)", "threshold": "", "result": "",
                     "measured": "running: WASM cold/hot start and auth checks; the load starts after it"})
    changes = {(d.metric, d.threshold): d for d in deltas or []}
    for v in verdicts:
        delta = changes.get((v.key, v.expression))
        measured = measured_text(v) + (f"; {delta.describe()}" if delta is not None else "")
        regressed = delta is not None and delta.regressed
        rows.append({"kpi": v.key, "threshold": v.expression, "measured": measured,
                     "result": "FAIL" if regressed else v.result})
    if run.profile == "stress":
        rows.append({"kpi": "(stress capacity)", "threshold": "the highest step that held every KPI",
                     "measured": windows.capacity_text(run.capacity_rps, run.steps), "result": ""})
    for row in tenant_rows or []:
        rows.append({"kpi": f"(tenant {row['tenant']})", "result": "",
                     "threshold": f"{row['role']} tenant" if row["role"] else "per tenant, not judged",
                     "measured": tenants.text(row)})
    if validity:
        invalid = breaches(validity)
        rows.append({"kpi": "(measurement validity)", "threshold": "generator and machine budgets",
                     "measured": cause(validity) if invalid else "; ".join(c.describe() for c in validity),
                     "result": "INCONCLUSIVE" if invalid else ""})
    rows.append({"kpi": "(thresholds file)", "threshold": thresholds.source, "result": "",
                 "measured": f"warm-up {thresholds.warmup_s:g} s not judged, counted again after Reset stats; "
                             "full text at /kpi"})
    return rows


def profile_note(load_profile: str) -> str:
    return (f"Users and ramp-up: the '{load_profile}' load profile sets them from thresholds.yaml "
            "(the http_reqs rps target). To set them here, start Locust with --load-profile plain.")


def reported_state(state: str, shape_running: bool) -> str:
    """The runner state the page is told.  While a run starts (the shape's
    greenlet is alive but the pre-flight still holds the runner in "ready"),
    Locust's page would stop polling on "ready" and stay on the start form
    for the whole run; it is told "spawning" instead, which it polls."""
    return STATE_SPAWNING if state == STATE_INIT and shape_running else state


def install(environment: Any) -> None:
    if environment.web_ui is None:
        return
    from flask import request

    web_ui = environment.web_ui
    app = web_ui.app
    thresholds: Thresholds = environment.apprun_thresholds
    web_ui.template_args["extended_tabs"] = [{"title": "KPIs", "key": KPI_TAB_KEY}]
    web_ui.template_args["extended_tables"] = [{"key": KPI_TAB_KEY, "structure": [
        {"key": "kpi", "title": "KPI"}, {"key": "threshold", "title": "threshold"},
        {"key": "measured", "title": "measured"}, {"key": "result", "title": "result"}]}]
    ui_extra = TEMPLATES.get_template("locust_ui_extra.html").render(
        results=list(RESULTS), profile_note=profile_note(environment.parsed_options.load_profile))

    @app.after_request
    def _extend(response):  # type: ignore[no-untyped-def]
        if request.path == "/stats/requests" and response.is_json:
            data = response.get_json()
            runner = environment.runner
            data["state"] = reported_state(data.get("state", ""), getattr(runner, "shape_greenlet", None) is not None)
            verdicts = live.live_verdicts(thresholds)
            deltas = baseline.compare(verdicts, environment.apprun_baseline, thresholds.regression) \
                if environment.apprun_baseline else []
            rows = tab_rows(verdicts, thresholds, live.run, live.validity_now(thresholds), deltas,
                            live.tenants_now(thresholds))
            data["extended_stats"] = [{"key": KPI_TAB_KEY, "data": rows}]
            response.set_data(json.dumps(data))
        elif request.path == "/" and response.mimetype == "text/html":
            page = response.get_data(as_text=True)
            response.set_data(page.replace("</head>", ui_extra + "</head>", 1))
        return response

    @app.route("/kpi.json")
    def kpi_json():  # type: ignore[no-untyped-def]
        return {"verdicts": [v.to_json() for v in live.live_verdicts(thresholds)],
                "thresholds": Path(thresholds.source).read_text()}

    @app.route("/kpi")
    def kpi_page():  # type: ignore[no-untyped-def]
        return TEMPLATES.get_template("kpi.html").render(
            verdicts=live.live_verdicts(thresholds), source=thresholds.source,
            thresholds_text=Path(thresholds.source).read_text())

    options = environment.parsed_options
    log.info("KPIs: the 'KPIs' tab of the web UI; thresholds and live values also at %s/kpi",
             f"http://{options.web_host or '127.0.0.1'}:{options.web_port}")
