"""The loop never swallows a handler's exception: strict (tests) re-raises it, production records it,
reports it as a HandlerFailed event and keeps serving the next event."""

import pytest

from node.loop import STRICT_ENV, EventLoop, HandlerFailed


class Ping:
    pass


class Pong:
    pass


def _boom(event):
    raise ValueError("bad state")


def test_handler_exception_fails_a_strict_loop():
    loop = EventLoop(strict=True)
    loop.on(Ping, _boom)
    loop.post(Ping())
    with pytest.raises(ValueError, match="bad state"):
        loop.drain()
    assert loop.failure_count == 1 and loop.failures[0].event == "Ping"


def test_timer_exception_fails_a_strict_loop():
    loop = EventLoop(strict=True, monotonic=lambda: 100.0)
    loop.call_at(0.0, lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        loop.run_once(max_wait=0)


def test_tests_run_the_loop_strictly_by_default(monkeypatch):
    assert EventLoop().strict  # tests/conftest.py sets SPEAKER_NODE_STRICT_LOOP for the whole session
    monkeypatch.delenv(STRICT_ENV)
    assert not EventLoop().strict  # production: a daemon without the variable reports and carries on


def test_production_loop_reports_the_failure_and_serves_the_next_event():
    loop = EventLoop(strict=False)
    reported, served = [], []
    loop.on(Ping, _boom)
    loop.on(Pong, served.append)
    loop.on(HandlerFailed, reported.append)
    loop.post(Ping())
    loop.post(Pong())
    loop.drain()
    assert len(served) == 1
    (failure,) = reported
    assert failure.handler == "_boom" and failure.event == "Ping"
    assert failure.error == "ValueError: bad state"
    assert failure.where.endswith(" in _boom") and "test_loop.py:" in failure.where
    assert "ValueError: bad state" in failure.traceback
    assert loop.failures == [failure]


def test_failing_failure_reporter_does_not_loop_forever():
    loop = EventLoop(strict=False)
    loop.on(Ping, _boom)
    loop.on(HandlerFailed, _boom)
    loop.post(Ping())
    loop.drain()
    assert loop.failure_count == 2 and loop._queue.empty()
    assert [f.event for f in loop.failures] == ["Ping", "HandlerFailed"]


def test_daemon_reports_handler_failed_and_keeps_playing(tmp_path, district_ws, monkeypatch):
    """Production (no SPEAKER_NODE_STRICT_LOOP): a bug in one handler becomes a handler_failed event for
    the district, and the next command is still verified and played."""
    from onair_harness import VirtualNode

    monkeypatch.delenv(STRICT_ENV)
    node = VirtualNode(tmp_path, district_ws)
    try:
        assert node.app.loop.strict is False
        real_on_play = node.app.onair.on_play
        calls = []

        def buggy_on_play(command, envelope):
            calls.append(command.id)
            if len(calls) == 1:
                raise KeyError("zones")
            return real_on_play(command, envelope)

        monkeypatch.setattr(node.app.onair, "on_play", buggy_on_play)
        clip = node.clip("ban-tin", 3)
        node.play(clip)
        (report,) = node.events("handler_failed")
        assert report["data"]["event"] == "InboundReady"  # messages reach the loop via the bounded inbound queue
        assert report["data"]["error"] == "KeyError: 'zones'"
        assert report["data"]["where"].endswith("in buggy_on_play")
        assert node.app.loop.failure_count == 1

        node.play(clip)
        node.run(10)
        assert [r["result"] for r in node.records()] == ["completed"]
    finally:
        node.close(expect_bug_reports=True)
