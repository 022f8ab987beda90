"""The gateway freezes its start-up heap before it serves (gateway/server.py):
long-lived objects then stay out of every full collection's walk."""
import subprocess
import sys


def test_freeze_startup_heap_moves_live_objects_out_of_the_collector() -> None:
    # In a fresh interpreter: freezing is process-wide and must not leak
    # into the test session's own collector.
    script = (
        "import gc; from gateway.server import freeze_startup_heap\n"
        "kept = [object() for _ in range(1000)]\n"
        "before = gc.get_freeze_count()\n"
        "freeze_startup_heap()\n"
        "after = gc.get_freeze_count()\n"
        "assert before == 0 and after >= len(kept), (before, after)\n"
        "print(after)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1000
