"""The gate's module structure: kpi/ never imports the personas, and the
module the personas record into has no side effects on import."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=True)
    return set(result.stdout.split())


def test_no_kpi_module_imports_the_personas() -> None:
    modules = sorted(p.stem for p in (ROOT / "kpi").glob("*.py") if p.stem != "__init__")
    # Locust first, as when it loads the locustfile (its gevent patching must
    # precede ssl's import).
    loaded = _imported_after("import locust; " + "; ".join(f"import kpi.{m}" for m in modules))
    assert {f"kpi.{m}" for m in modules} <= loaded
    assert not [m for m in loaded if m.startswith("locustfiles")]


def test_no_kpi_module_names_the_personas_even_inside_a_function() -> None:
    """Also the lazy imports a run would reach later (the old pre-flight
    imported the personas' login from inside a function)."""
    offenders = []
    for path in (ROOT / "kpi").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "locustfiles"]
    assert offenders == []


def test_the_hooks_module_does_not_import_locust() -> None:
    """Importing Locust monkey-patches the process and registers listeners:
    the personas' recording module must not."""
    loaded = _imported_after("import kpi.hooks, kpi.pacing, kpi.seed, kpi.state, kpi.live")
    assert "locust" not in loaded and "gevent" not in {m.split(".")[0] for m in loaded}


def test_recorded_violations_reach_the_collector() -> None:
    from kpi import hooks

    before = hooks.collector.snapshot(0, 2**31).counters.get("rbac_violations", 0)
    hooks.record_violation("rbac_violations")
    assert hooks.collector.snapshot(0, 2**31).counters["rbac_violations"] == before + 1


def test_the_plugin_still_offers_what_older_locustfiles_import() -> None:
    loaded = _imported_after("import locust; from kpi.plugin import PER_USER_RPS, after_load, record_violation")
    assert "kpi.hooks" in loaded
