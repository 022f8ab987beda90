"""The personas' handling of 429 (locustfiles/refusals.py), through Locust's
own FastHttpSession against a tiny local server that answers 429:

* the noisy tenant's 429 reaches the request event as no failure, even
  when the task marked it failed, so it stays out of http_req_failed;
* a 429 to a request that must be refused (403) is a failure but never a
  correctness violation: the request was not run (the old code counted an
  isolation violation for it).

Locust monkey-patches the process with gevent when imported, so the checks
run in a child process and report JSON (as tests/test_storage_tasks.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import json, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
from locustfiles import personas
from locustfiles.refusals import ExpectedRefusals

class TooMany(BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(429)
        self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), TooMany)
threading.Thread(target=server.serve_forever, daemon=True).start()
host = f"http://127.0.0.1:{server.server_address[1]}"
environment = Environment(host=host)
reported = []
environment.events.request.add_listener(
    lambda name, exception, response, **_kw: reported.append([name, response.status_code, exception is None]))
violations = []
personas.record_violation = violations.append

quiet = FastHttpSession(host, environment.events.request, user=None)
noisy = FastHttpSession(host, environment.events.request, user=None)
noisy.request_event = ExpectedRefusals(noisy.request_event)
for session, name in ((quiet, "quiet"), (noisy, "noisy")):
    with session.post("/x", json={}, name=name, catch_response=True) as r:
        r.failure("spin: HTTP 429")                 # what a task does with an answer it did not expect
    with session.post("/x", json={}, name=name + " forbidden", catch_response=True) as r:
        personas._expect_forbidden(r, "cross-tenant insert", "isolation_violations")
server.shutdown()
print(json.dumps({"reported": reported, "violations": violations}))
'''


def run_script() -> dict:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_429_is_no_failure_for_the_noisy_tenant_and_no_violation_for_anyone() -> None:
    outcome = run_script()
    assert outcome["reported"] == [["quiet", 429, False], ["quiet forbidden", 429, False],
                                   ["noisy", 429, True], ["noisy forbidden", 429, True]]
    assert outcome["violations"] == []
