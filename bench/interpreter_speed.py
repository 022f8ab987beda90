"""Pure-Python speed of each Python 3.11 on this machine.

CPython builds differ a lot in speed. Distribution packages (Debian's
``/usr/bin/python3.11``) are built with profile-guided optimization and
link-time optimization. pyenv's default build has neither, so the same code
runs slower on it. The gateway's CPU is mostly interpreter time, and the
kpi run's CPU on each build is in the README ("Which Python"). So ``./dev``
makes ``.venv`` with the distribution's interpreter when there is one (see
``pick_python`` there).

This probe is a small pure-Python workload, run in turns, each interpreter
scored by its median round. On a shared VM it still moves: of six runs on
2026-11-24, four put Debian's build 1.34-1.69x ahead and two put pyenv's
1.07x ahead. That is why ``./dev`` does not choose by it.

Standard library only: it runs with any Python 3.
Usage: ``python3 bench/interpreter_speed.py [INTERPRETER ...]``
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

#: Where a Python 3.11 is usually found: the names on PATH (pyenv's shims
#: among them) and the distribution's and a local build's fixed paths.
CANDIDATES = ("python3.11", "python3", "/usr/bin/python3.11", "/usr/local/bin/python3.11")
WANTED_VERSION = (3, 11)
PROBE_TIMEOUT_S = 60
ROUNDS = 5

# Runs in each candidate: its real path, version, whether it can make a
# virtual environment, and the best of 3 CPU times of a workload shaped like
# the gateway's (calls, attributes, dicts, strings, JSON).
PROBE = r"""
import json, sys, time
def call(a, b=2, *args, **kw): return a + b
class Thing:
    def __init__(self): self.x = 1
    def method(self, y): return self.x + y
def work():
    thing, table, total = Thing(), {}, 0
    for i in range(20000):
        total += call(i) + thing.method(i)
        table[str(i % 100)] = i
        total += len(json.dumps({"a": i, "b": [i, str(i)]}))
    return total
try:
    import ensurepip, venv
    can_venv = True
except ImportError:
    can_venv = False
best = float("inf")
for _ in range(3):
    started = time.process_time()
    work()
    best = min(best, time.process_time() - started)
print(json.dumps({"executable": sys.executable, "version": list(sys.version_info[:3]),
                  "can_venv": can_venv, "seconds": best}))
"""


def resolve(interpreter: str) -> str | None:
    path = interpreter if os.sep in interpreter else shutil.which(interpreter)
    return path if path is not None and os.access(path, os.X_OK) else None


def probe(path: str) -> dict | None:
    """The interpreter's figures, or None when it cannot run or is not 3.11."""
    try:
        done = subprocess.run([path, "-c", PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              check=True)
        figures = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if tuple(figures["version"][:2]) != WANTED_VERSION:
        return None
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("interpreters", nargs="*", help=f"candidates (default: {', '.join(CANDIDATES)})")
    args, _unknown = parser.parse_known_args(argv)  # ./dev bench passes the same arguments to every script
    found: dict[str, dict] = {}
    resolved = (resolve(candidate) for candidate in args.interpreters or CANDIDATES)
    paths = list({os.path.realpath(path): path for path in resolved if path is not None}.values())
    # Rounds taken in turn, each candidate scored by its median round: a
    # burst of noise on a shared machine (a VM's stolen time) then spoils a
    # round or two of one candidate, not its score.
    rounds: dict[str, list[float]] = {}
    for _round in range(ROUNDS):
        for path in paths:
            figures = probe(path)
            if figures is None:
                continue
            key = os.path.realpath(figures["executable"])
            found.setdefault(key, figures)
            rounds.setdefault(key, []).append(figures["seconds"])
    for key, figures in found.items():
        figures["seconds"] = statistics.median(rounds[key])
    if not found:
        print("no Python 3.11 found among the candidates")
        return 1
    fastest = min(f["seconds"] for f in found.values())
    print(f"{'interpreter':<48} {'version':>8} {'venv':>5} {'CPU ms':>8} {'x fastest':>10}")
    for figures in sorted(found.values(), key=lambda f: f["seconds"]):
        version = ".".join(str(part) for part in figures["version"])
        print(f"{figures['executable']:<48} {version:>8} {'yes' if figures['can_venv'] else 'no':>5} "
              f"{figures['seconds'] * 1000:>8.1f} {figures['seconds'] / fastest:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
