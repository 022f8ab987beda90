"""The noisy profile's burst users send on their schedule whatever the
answers take (locustfiles/arrival.py), against a tiny local server that
holds every answer: the burst is the rate asked, not what the gateway's
waits let through (a user waiting for each answer sent one request per
answer's time: the burst reached 2x of the 4x asked).

Locust monkey-patches the process with gevent when imported, so the checks
run in a child process and report JSON (as tests/test_noisy_personas.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
import gevent
from gevent.pool import Group
from locust.env import Environment
from kpi.pacing import DUE_AT
from locustfiles.noisy import NoisyNeighbour

HOLD_S = float(sys.argv[1])
in_flight = {"now": 0, "most": 0}
lock = threading.Lock()

class Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/auth/login":
            return self._answer(200, {"access_token": "t"})
        with lock:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
        time.sleep(HOLD_S)                   # a spinning call's wait for its tenant's slot
        with lock:
            in_flight["now"] -= 1
        self._answer(429, {"code": "over_budget", "message": "m", "details": {}, "hint": None})
    do_GET = do_POST
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
environment = Environment(host=f"http://127.0.0.1:{server.server_address[1]}")
environment.parsed_options = SimpleNamespace(load_profile="noisy", noisy_user="charlie")
sent = []
environment.events.request.add_listener(
    lambda name, start_time, context, **_kw: sent.append([name, start_time, context.get(DUE_AT)]))

class Burst(NoisyNeighbour):
    max_in_flight = int(sys.argv[2])
    host = environment.host

user = Burst(environment)
user.start(Group())
gevent.sleep(float(sys.argv[3]))      # the window the user sends in
user.stop(force=True)                  # its requests in flight end unrecorded
sends = [s for s in sent if s[0] != "/auth/login"]
print(json.dumps({"sends": sends, "most_in_flight": in_flight["most"], "rate": user.schedule.rate,
                  "started": user.schedule.done, "connections": Burst.concurrency}))
'''


def run_burst_user(hold_s: float, max_in_flight: int, run_s: float) -> dict:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(hold_s), str(max_in_flight), str(run_s)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_burst_user_keeps_its_schedule_while_its_answers_are_held() -> None:
    outcome = run_burst_user(hold_s=0.6, max_in_flight=16, run_s=2.0)
    # Every send (a spin, a slow workflow start, a list read) is held 0.6 s.
    # 2 s at 5/s is 10 sends due (the first at once); those sent in the
    # first 1.4 s are answered before the user stops: 7 or 8 of them.  A
    # user that waited for each answer would have sent 4.
    sends = outcome["sends"]
    assert outcome["rate"] == 5.0 and len(sends) >= 6, sends
    assert outcome["most_in_flight"] >= 3
    for _name, start_time, due in sends:
        # Each send leaves when due (not after the answer before it), and
        # its due time is its own, not the schedule's next one (0.2 s later).
        assert due is not None and -0.05 < start_time - due < 0.3, (start_time, due)
    assert len({due for _name, _start, due in sends}) == len(sends)


def test_a_burst_user_holds_at_most_its_cap_in_flight() -> None:
    outcome = run_burst_user(hold_s=1.5, max_in_flight=2, run_s=2.5)
    # The cap is the user's, not its client's: the connection pool is larger.
    assert outcome["connections"] == 16 and outcome["most_in_flight"] == 2
    # A send due while both are busy waits for one: in the 2.5 s the first
    # two are answered (at 1.5 s) and the next two are held until 3.0 s; a
    # user without the cap would have started about 12.
    sends = outcome["sends"]
    assert len(sends) == 2, sends
    assert outcome["started"] <= 4


STOP_SCRIPT = r'''
import json, time
import gevent
from gevent.pool import Group
from locust import User
from locust.env import Environment
from locust.exception import StopUser
from kpi.pacing import OpenSchedule
from locustfiles.arrival import ArrivalRateSends, sent_without_waiting

environment = Environment()
errors, seen = [], {"sends": 0, "stopped": False}
environment.events.user_error.add_listener(lambda exception, **_kw: errors.append(type(exception).__name__))

def stop_on_third_send(user):
    seen["sends"] += 1
    if seen["sends"] == 3:
        raise StopUser()

class Sender(ArrivalRateSends, User):
    tasks = [sent_without_waiting(stop_on_third_send)]
    def on_start(self):
        self.schedule = OpenSchedule(20.0, time.time())
        super().on_start()
    def wait_time(self):
        return self.schedule.next_wait(time.time())
    def on_stop(self):
        seen["stopped"] = True
        super().on_stop()

user = Sender(environment)
user.start(Group())
user.greenlet.join(timeout=5)          # ends when the StopUser stops it (or the test fails)
print(json.dumps({**seen, "dead": user.greenlet.dead, "errors": errors}))
'''


def test_a_sent_task_that_raises_stop_user_stops_its_user() -> None:
    """As in Locust's own task loop: StopUser stops the user (its on_stop
    runs), it is no user error, and no send follows it."""
    result = subprocess.run([sys.executable, "-c", STOP_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    # Without the stop the user would still run at the timeout: ~100 sends.
    assert outcome == {"sends": 3, "stopped": True, "dead": True, "errors": []}
