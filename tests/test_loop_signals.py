"""A SIGTERM may land at any bytecode of the main thread, including inside the loop's own queue.get().
A handler that takes a lock the interrupted code holds never returns: the node (or the district service)
then ignores every further SIGTERM until systemd kills it, and a restart in the middle of a play takes the
whole stop timeout. Seen on this machine: a node daemon that never exited after SIGTERM.

Each case runs in a child process (a deadlock must fail the test, not hang it). With the loop's old
queue.Queue the first case hung 3 runs out of 3."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BUSY_LOOP = """
import signal, sys, threading, time
sys.path.insert(0, {root!r})
from node.loop import EventLoop

class Tick: pass
loop = EventLoop(strict=True)
ticks = [0]
loop.on(Tick, lambda ev: ticks.__setitem__(0, ticks[0] + 1))
def poster():                      # paho/libVLC threads posting all the time
    while True:
        loop.post(Tick())
        time.sleep(0)
threading.Thread(target=poster, daemon=True).start()
alarms = [0]
def on_alarm(signum, frame):       # what the daemon's SIGTERM handler does
    alarms[0] += 1
    loop.post(Tick())
    if alarms[0] == 1000:
        loop.stop()
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
loop.run()
signal.setitimer(signal.ITIMER_REAL, 0, 0)
print("stopped", alarms[0], ticks[0])
"""

WAITING_SERVICE = """
import signal, sys, time
sys.path.insert(0, {root!r})
from node.loop import SignalStop

stop = SignalStop()
assert stop.wait(0.01) is False                # not set: waits, then says so
signal.signal(signal.SIGALRM, stop.set)         # what serve's and the modem simulator's handlers do
signal.setitimer(signal.ITIMER_REAL, 0.2)
started = time.monotonic()
assert stop.wait(60) is True                    # the signal wakes the waiting main thread...
assert time.monotonic() - started < 30          # ...at once, not after the timeout
assert stop.wait(0) and stop.wait(5)            # and once set it stays set
print("stopped")
"""


def run_child(source: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(source).format(root=str(ROOT))
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:   # the deadlock this file is about
        raise AssertionError("the process never stopped: a signal handler deadlocked on a lock") from exc


def test_sigterm_landing_inside_the_loops_queue_get_still_stops_the_loop():
    done = run_child(BUSY_LOOP)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("stopped 1000 "), done.stdout


def test_a_signal_wakes_a_service_waiting_to_stop():
    # SignalStop's put() is reentrant by construction (queue.SimpleQueue), unlike threading.Event.set();
    # the deadlock window inside Event.wait() is a few bytecodes, too narrow to hit reliably in a test.
    done = run_child(WAITING_SERVICE)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "stopped", done.stdout
