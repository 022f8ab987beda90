"""apprun-loadkit: personas + KPI gate + load shapes.  Run from the
repository root: ``locust`` (web UI) or ``locust --headless``."""
from kpi.plugin import KpiLoadShape  # noqa: F401  (registers the gate's listeners and options)
from locustfiles.noisy import NoisyNeighbour  # noqa: F401  (the noisy profile's burst only)
from locustfiles.personas import Alice, Bob, Charlie  # noqa: F401
