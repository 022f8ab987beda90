"""The kpi profile's pacing, shared by the load shapes and the personas."""
from __future__ import annotations

PER_USER_RPS = 5.0           # each simulated user's request rate
