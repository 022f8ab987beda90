"""The gate's Locust options (the README lists them; locust.conf sets the
project's defaults; the web UI shows them under "Custom parameters")."""
from __future__ import annotations

from typing import Any

from locust import events

from kpi.seed import SEED_ADMIN_EMAIL, seed_password
from kpi.shapes import PROFILES


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument("--thresholds", default="thresholds.yaml", help="KPI thresholds file (see README)")
    parser.add_argument("--load-profile", default="kpi", choices=list(PROFILES),
                        help="kpi: hold the RPS KPI; stress: step up until a KPI breaks (both set the users and "
                             "ramp-up themselves); plain: --users/--spawn-rate")
    parser.add_argument("--report-dir", default="reports", help="where reports/<timestamp>/ is written")
    parser.add_argument("--skip-preflight", action="store_true", default=False,
                        help="skip the WASM/auth pre-flight (their KPIs then have no samples)")
    parser.add_argument("--baseline", default="",
                        help="an earlier run's summary.json: each KPI's change against it, and the regression: "
                             "limits of the thresholds file")
    parser.add_argument("--kpi-user", default=SEED_ADMIN_EMAIL,
                        help="the user the pre-flight logs in as (an admin: it deploys a function)")
    parser.add_argument("--kpi-password", default="", is_secret=True,
                        help="that user's password (default: APPRUN_SEED_PASSWORD, else the seed's)")


def preflight_credentials(options: Any) -> tuple[str, str]:
    return options.kpi_user, options.kpi_password or seed_password()
