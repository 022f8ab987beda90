"""The gate's Locust options (the README lists them; locust.conf sets the
project's defaults; the web UI shows them under "Custom parameters")."""
from __future__ import annotations

from typing import Any

from locust import events

from kpi.profiles import PROFILES
from kpi.seed import SEED_ADMIN_EMAIL, SEED_USERS_BY_NAME, seed_password

#: The noisy profile's defaults: charlie (tenant-2) takes his tenant to 4x its
#: share for 20 s, after 20 s of steady load (10 s of warm-up, 10 s judged).
NOISY_USER = "charlie"
BURST_AFTER_S = 20.0
BURST_FOR_S = 20.0
BURST_MULTIPLE = 4.0


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument("--thresholds", default="thresholds.yaml", help="KPI thresholds file (see README)")
    parser.add_argument("--load-profile", default="kpi", choices=list(PROFILES),
                        help="kpi: hold the RPS KPI; stress: step up until a KPI breaks; noisy: the kpi mix, and "
                             "one tenant bursts (--noisy-user, --burst-*) (these set the users and ramp-up "
                             "themselves); plain: --users/--spawn-rate")
    parser.add_argument("--report-dir", default="reports", help="where reports/<timestamp>/ is written")
    parser.add_argument("--skip-preflight", action="store_true", default=False,
                        help="skip the WASM/auth pre-flight (their KPIs then have no samples)")
    parser.add_argument("--baseline", default="",
                        help="an earlier run's summary.json: each KPI's change against it, and the regression: "
                             "limits of the thresholds file")
    parser.add_argument("--noisy-user", default=NOISY_USER, choices=sorted(SEED_USERS_BY_NAME),
                        help="noisy profile: the seed user whose tenant bursts (charlie: tenant-2); the other "
                             "tenants are quiet")
    parser.add_argument("--burst-after", type=float, default=BURST_AFTER_S,
                        help="noisy profile: seconds of steady load before the burst (more than warmup_s)")
    parser.add_argument("--burst-for", type=float, default=BURST_FOR_S, help="noisy profile: the burst's seconds")
    parser.add_argument("--burst-multiple", type=float, default=BURST_MULTIPLE,
                        help="noisy profile: the noisy tenant's users during the burst, as a multiple of its "
                             "steady share (> 1)")
    parser.add_argument("--kpi-user", default=SEED_ADMIN_EMAIL,
                        help="the user the pre-flight logs in as (an admin: it deploys a function)")
    parser.add_argument("--kpi-password", default="", is_secret=True,
                        help="that user's password (default: APPRUN_SEED_PASSWORD, else the seed's)")


def preflight_credentials(options: Any) -> tuple[str, str]:
    return options.kpi_user, options.kpi_password or seed_password()
