"""systemd notify protocol by hand: READY=1, STATUS=, WATCHDOG=1 at half of WATCHDOG_USEC from the loop
thread only, STOPPING=1; a hung loop stops the watchdog pings."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from support import write_node_config

from node.adapters.broker import FakeBroker
from node.adapters.systemd_notify import Notifier
from node.config import load_config
from node.wiring import build_app


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.05)
    yield path, sock
    sock.close()


def _collect(sock, seconds):
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append((time.monotonic(), sock.recv(4096).decode()))
        except socket.timeout:
            pass
    return out


def test_notifier_sends_datagrams_and_abstract_addresses_work(notify_socket):
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_interval() == 1.0
    assert n.ready("hello") and n.watchdog() and n.stopping()
    got = [m for _, m in _collect(sock, 0.2)]
    assert got == ["READY=1\nSTATUS=hello", "WATCHDOG=1", "STOPPING=1"]
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier({}).notify("READY=1") is False


class Hang:
    """Posted to the loop: its handler blocks until released (a hung loop)."""

    def __init__(self, release: threading.Event):
        self.entered, self.release = threading.Event(), release

    def handle(self):
        self.entered.set()
        self.release.wait(5)


def test_hung_loop_stops_watchdog_pings(notify_socket, tmp_path, district_ws):
    path, sock = notify_socket
    cfg = load_config(write_node_config(tmp_path / "n.toml", district_ws, "27787-01", ["127.0.0.1:1"]))
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # ping every 0.1 s
    started, apps = threading.Event(), []

    def node_thread():
        # Built, started, run and stopped on one thread, as the daemon does (the state store is SQLite,
        # bound to the thread that opened it); the test only posts events into it.
        app = build_app(cfg, notifier=notifier, make_broker=lambda **kw: FakeBroker(**kw))
        app.loop.on(Hang, Hang.handle)
        apps.append(app)
        try:
            app.start()
            started.set()
            app.loop.run()
        finally:
            app.shutdown()
            app.close()

    runner = threading.Thread(target=node_thread, daemon=True)
    runner.start()
    assert started.wait(10)
    try:
        healthy = _collect(sock, 0.6)
        assert healthy[0][1].startswith("READY=1") or any(m.startswith("READY=1") for _, m in healthy)
        pings = [t for t, m in healthy if m == "WATCHDOG=1"]
        assert len(pings) >= 3

        release = threading.Event()
        hang = Hang(release)
        apps[0].loop.post(hang)
        assert hang.entered.wait(5)
        _collect(sock, 0.1)  # a ping already on its way when the loop hung
        hung = _collect(sock, 0.8)
        assert [m for _, m in hung if m == "WATCHDOG=1"] == []
        release.set()
        recovered = _collect(sock, 0.5)
        assert any(m == "WATCHDOG=1" for _, m in recovered)
    finally:
        apps[0].loop.stop()
        runner.join(5)
    assert not runner.is_alive()
    assert any(m == "STOPPING=1" for _, m in _collect(sock, 0.2))
