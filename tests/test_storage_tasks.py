"""The personas' storage tasks (locustfiles/storage_tasks.py) against the
real stack, through Locust's own FastHttpSession: the honest run counts no
violation, and each check does count when the gateway's answer is wrong.

Locust monkey-patches the process with gevent when imported, so the tasks
run in a child process (the script below) and report JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import SEED_PASSWORD, TENANT_1, TENANT_2

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import json, os, sys
from collections import Counter
from types import SimpleNamespace
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
from locustfiles import personas, storage_tasks

args = json.loads(os.environ["STORAGE_TASKS_ARGS"])
import random
random.seed(20261123)   # the tasks pick sizes and bob's write at random: the same picks every run
personas.SEED_PASSWORD = args["password"]
violations = Counter()
storage_tasks.record_violation = lambda counter: violations.update([counter])
environment = Environment(host=args["host"])
outcomes = Counter()
environment.events.request.add_listener(lambda name, exception, **_kw: outcomes.update([f"{name} {exception is None}"]))

def user(name, tenant, other):
    return SimpleNamespace(client=FastHttpSession(args["host"], environment.events.request, user=None),
                           headers={"Authorization": "Bearer " + args["tokens"][name]},
                           tenant_id=tenant, other_tenant=other)

t1, t2 = args["tenants"]
storage_tasks._create_buckets(environment)
try:
    if args["scenario"] == "honest":
        alice, charlie, bob = user("alice", t1, t2), user("charlie", t2, t1), user("bob", t1, t2)
        for admin in (alice, charlie):
            for _ in range(3):
                storage_tasks.upload_object(admin)
            for _ in range(4):   # the fourth has nothing left to verify: a seed download
                storage_tasks.read_back_object(admin)
            storage_tasks.cross_tenant_download(admin)
        for _ in range(6):
            storage_tasks.download_seed(bob)
            storage_tasks.list_seed_folder(bob)
            storage_tasks.forbidden_write(bob)
    else:
        alice = user("alice", t1, t2)
        storage_tasks.cross_tenant_download(user("alice", t1, t1))        # its own object as "foreign"
        storage_tasks.forbidden_write(alice)   # an admin posing as bob (after: it may delete the seed)
        storage_tasks.upload_object(alice)
        name, _digest, size = alice.storage_unverified[0]
        alice.storage_unverified[0] = (name, b"not the md5 of what was sent", size)
        storage_tasks.read_back_object(alice)                              # other bytes than expected
finally:
    storage_tasks._remove_buckets(environment)
print(json.dumps({"violations": violations, "outcomes": outcomes}))
'''


def _run(scenario: str, gateway_url: str, tokens: dict[str, str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "STORAGE_TASKS_ARGS": json.dumps({"host": gateway_url, "tokens": tokens, "password": SEED_PASSWORD,
                                             "tenants": [TENANT_1, TENANT_2], "scenario": scenario})}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tasks_pass_against_a_correct_gateway(gateway_url, tokens) -> None:
    result = _run("honest", gateway_url, tokens)
    assert result["violations"] == {}
    assert not [name for name in result["outcomes"] if name.endswith(" False")], result["outcomes"]
    assert result["outcomes"]["/storage/v1/object [upload] True"] == 6
    assert result["outcomes"]["/storage/v1/object [read back] True"] == 6
    assert result["outcomes"]["/storage/v1/object [cross-tenant download] True"] == 2
    assert result["outcomes"]["/storage/v1/object/list [list] True"] == 6


def test_each_check_counts_its_violation(gateway_url, tokens) -> None:
    result = _run("broken", gateway_url, tokens)
    assert result["violations"] == {"rbac_violations": 1, "isolation_violations": 1, "lost_writes": 1}
