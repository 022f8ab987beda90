"""``docker compose up`` in stack/ must build and run the stack.  There is no
Docker engine here, so these tests check everything the compose file and the
Dockerfile name against the project: build contexts, files, commands and
their flags, modules, variables, ports, volumes; and run the compose
``stack`` service's command against the session's PostgreSQL and Temporal,
as the container would."""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests
import yaml

from gateway.settings import Settings
from stack import postgres
from stack.config import StackConfig
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "stack" / "docker-compose.yml"
PROJECT_ENV = {"APPRUN_" + f.name.upper() for f in fields(StackConfig)} | {
    "APPRUN_" + f.name.upper() for f in fields(Settings)}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def built_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in services().items() if "build" in service}


def build_paths(service: dict[str, Any]) -> tuple[Path, Path]:
    build = service["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    context_dir = (COMPOSE_FILE.parent / context).resolve()
    return context_dir, context_dir / dockerfile


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerignore_patterns(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.exists():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for our patterns: a path is excluded when it or
    one of its parent directories matches; ``**/x`` matches x at any depth."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in (p.lstrip("/") for p in patterns):
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def image_env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions(dockerfile):
        if keyword == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def container_port(mapping: str) -> int:
    return int(str(mapping).rsplit(":", 1)[1].split("/")[0])


def flag_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# --- build contexts and the Dockerfile ----------------------------------------

def test_every_build_context_and_dockerfile_exists():
    assert built_services(), "no service builds the project's image"
    for name, service in built_services().items():
        context, dockerfile = build_paths(service)
        assert context == ROOT, f"{name}: build context {context} is not the project"
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"


def test_every_dockerfile_copy_source_exists_and_is_not_dockerignored():
    context, dockerfile = build_paths(next(iter(built_services().values())))
    patterns = dockerignore_patterns(context)
    copies = [rest for keyword, rest in dockerfile_instructions(dockerfile) if keyword in ("COPY", "ADD")]
    assert copies
    for rest in copies:
        sources = [token for token in shlex.split(rest) if not token.startswith("--")][:-1]
        for source in sources:
            assert (context / source).exists(), f"COPY {source}: not in the build context"
            assert not ignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by .dockerignore"


def test_the_image_copies_every_package_setup_cfg_installs():
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    packages = {line.strip().rstrip("*") for line in config["options.packages.find"]["include"].split() if line}
    copied = set()
    for keyword, rest in dockerfile_instructions(ROOT / "Dockerfile"):
        if keyword == "COPY":
            copied.update(token.strip("./") for token in shlex.split(rest)[:-1])
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    # `pip install .` reads these; README.md is the long description.
    assert {"setup.cfg", "pyproject.toml", "constraints.txt", "README.md"} <= copied


def test_the_image_command_is_a_module_of_the_project():
    cmd = [rest for keyword, rest in dockerfile_instructions(ROOT / "Dockerfile") if keyword == "CMD"][-1]
    args = json.loads(cmd)
    assert args[:2] == ["python", "-m"]
    module = args[2]
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"CMD names a missing module {module}"


# --- commands, variables, ports ---------------------------------------------------

def _check_command(name: str, args: list[str]) -> None:
    if args[:2] == ["python", "-m"]:
        module = args[2]
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{name}: no module {module}"
        return
    # A console script the image installs: one of ours, or shipped by a dependency.
    executable = Path(sys.executable).parent / args[0]
    assert executable.exists(), f"{name}: `{args[0]}` is not installed by the project's dependencies"
    options = [arg for arg in args[1:] if arg.startswith("--")]
    first_option = next((i for i, arg in enumerate(args) if arg.startswith("-")), len(args))
    subcommand = args[1:first_option]
    help_text = ""
    # The subcommand's own help, plus the global options (`temporal options`).
    for help_args in ([*subcommand, "--help"], ["options"]):
        help_text += subprocess.run([str(executable), *help_args], capture_output=True, text=True,
                                    timeout=60).stdout
    assert subcommand and "unknown command" not in help_text.lower()
    for option in options:
        assert option in help_text, f"{name}: `{' '.join(args[:4])}` has no option {option}"


def test_every_command_of_a_built_service_exists_with_its_options():
    for name, service in built_services().items():
        _check_command(name, argv(service.get("command", [])) or ["python", "-m", "stack.foreground"])
        health = service.get("healthcheck", {}).get("test")
        if health:
            assert health[0] == "CMD"
            _check_command(f"{name} healthcheck", health[1:])


def test_every_variable_is_a_project_setting():
    for name, service in built_services().items():
        unknown = set(service.get("environment", {})) - PROJECT_ENV
        assert not unknown, f"{name}: variables no setting reads: {unknown}"
    assert set(image_env(ROOT / "Dockerfile")) - PROJECT_ENV <= {
        "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}


def test_ports_addresses_and_dependencies_agree():
    all_services = services()
    stack_service = all_services["stack"]
    env = stack_service["environment"]
    config = StackConfig.from_env(environ={k: str(v) for k, v in env.items()})
    # The gateway listens on all interfaces inside the container, on the published port.
    assert config.host == "0.0.0.0"
    assert [container_port(p) for p in stack_service["ports"]] == [config.gateway_port]

    database = urlsplit(env["APPRUN_DATABASE_URL"])
    assert database.hostname in all_services
    pg = all_services[database.hostname]
    assert database.port in [container_port(p) for p in pg["ports"]]
    assert database.path.lstrip("/") == pg["environment"]["POSTGRES_DB"] == config.database_name
    assert (database.username, database.password) == (pg["environment"]["POSTGRES_USER"],
                                                      pg["environment"]["POSTGRES_PASSWORD"])

    temporal_host, temporal_port = env["APPRUN_TEMPORAL_ADDRESS"].rsplit(":", 1)
    assert temporal_host in all_services
    temporal_args = argv(all_services[temporal_host]["command"])
    assert flag_value(temporal_args, "--port") == temporal_port
    assert flag_value(temporal_args, "--ip") == "0.0.0.0"
    published = [container_port(p) for p in all_services[temporal_host]["ports"]]
    assert published == [int(temporal_port), int(flag_value(temporal_args, "--ui-port"))]

    for name, service in all_services.items():
        assert set(service.get("depends_on", {})) <= set(all_services), f"{name}: depends on unknown services"


def test_the_state_volume_is_the_state_directory_of_the_image():
    stack_service = services()["stack"]
    state_dir = image_env(ROOT / "Dockerfile")["APPRUN_STATE_DIR"]
    assert stack_service["environment"].get("APPRUN_STATE_DIR", state_dir) == state_dir
    volume, mount = stack_service["volumes"][0].split(":")[:2]
    assert mount == state_dir
    assert volume in compose()["volumes"]


# --- the stack service's command, run as the container would -------------------

def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_stack_service_command_runs_against_existing_postgres_and_temporal(running_stack, stack_secrets,
                                                                               tmp_path):
    """The compose ``stack`` service: schema applied as the database owner,
    gateway on APPRUN_HOST=0.0.0.0, in the foreground until SIGTERM, which
    stops what it started."""
    session_config, session_state = running_stack
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    # The same secrets as the session's stack: applying the schema sets the
    # gateway role's password, which the session's gateway must keep.
    shutil.copy(session_config.state_dir / "secrets.json", state_dir / "secrets.json")
    port = free_port()
    env = {
        **os.environ,
        "APPRUN_STATE_DIR": str(state_dir),
        "APPRUN_DATABASE_URL": postgres.superuser_url(session_config, stack_secrets["pg_superuser_password"],
                                                      "apprun"),
        "APPRUN_TEMPORAL_ADDRESS": session_state.temporal_address,
        "APPRUN_HOST": "0.0.0.0",
        "APPRUN_GATEWAY_PORT": str(port),
        # A second worker on the session's task queue would take activities
        # from the workflow tests; the compose service runs one.
        "APPRUN_START_WORKER": "0",
        "APPRUN_SEED_PASSWORD": "apprun-test-password",
    }
    command = argv(services()["stack"]["command"])
    process = subprocess.Popen([sys.executable, *command[1:]], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        assert process.poll() is None, process.communicate()[0]
        login = requests.post(f"http://127.0.0.1:{port}/auth/login", timeout=10,
                              json={"email": "alice@test.com", "password": "apprun-test-password"})
        assert login.status_code == 200, login.text
        gateway_pid = json.loads((state_dir / "stack.json").read_text())["processes"]["gateway"]["pid"]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        assert "gateway" in output and "stopped" in output
        assert not _running(gateway_pid)
        # The session's own gateway still logs in: the role's password is unchanged.
        assert requests.post(session_state.gateway_url + "/auth/login", timeout=10,
                             json={"email": "bob@test.com", "password": "apprun-test-password"}).status_code == 200
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
