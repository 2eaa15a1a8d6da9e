"""The node's TimeKeeper inside the whole node (virtual time, the real loop, intake and on-air, a fake
broker): fresh nonces, back-off while untrusted, a refresh at the shipped interval, and answers that must never
set the clock - unsolicited, replayed, late. Held commands are decided by the time that comes."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from onair_harness import VirtualNode

from node.config import SCHEMA
from node.trust.timeanswer import answer_body
from provisioning.district.signing import sign_envelope
from provisioning.district.timeservice import TimeSigner, time_keys

NODE = "27787-01"
REQ = f"spk/node/{NODE}/time/req"
ANSWER = f"spk/node/{NODE}/time"
REFRESH_S = SCHEMA["clock"]["time_refresh"].default     # the shipped [clock] time_refresh


@pytest.fixture
def node(tmp_path, district_ws):
    n = VirtualNode(tmp_path, district_ws)
    n.clock.ntp = False          # a node on a pole without NTP: time comes from the district only
    yield n
    n.close()


def requests(node) -> list[tuple[float, str]]:
    return [json.loads(p)["nonce"] for t, p, _, _ in node.broker.published if t == REQ]


def rejected_reasons(node) -> list[str]:
    return [e["data"]["reason"] for e in node.events("rejected")]


def trusted(node) -> bool:
    return node.app.intake.observe_clock() is not None


def test_time_requests_carry_fresh_nonces_back_off_while_untrusted_then_refresh_at_the_shipped_interval(node):
    assert len(requests(node)) == 1                      # asked at connect
    node.run(2 + 4 + 8 + 16 + 32 + 60 + 60)              # 2 s doubling to 60 s while nobody answers
    asked = requests(node)
    assert len(asked) == 8 and len(set(asked)) == 8       # a fresh random nonce every time
    assert not trusted(node)
    node.answer_time()
    assert trusted(node) and node.app.clock_trust.status()["source"] == "signed"
    before = len(requests(node))
    assert REFRESH_S == 7200                             # 2 h: the 4G traffic budget (BENCHMARKS.md)
    node.run(REFRESH_S - 1)
    assert len(requests(node)) == before                 # fresh signed time: no request until the refresh
    node.run(2)
    assert len(requests(node)) == before + 1             # then one, to bound the drift


def test_unsolicited_time_answer_never_sets_the_clock(node, district_ws):
    from provisioning.district.workspace import Workspace

    keys = time_keys(Workspace.load(district_ws))
    never_asked = "ab" * 32
    forged_time = node.clock.wall() + dt.timedelta(days=3650)
    node.broker.deliver(ANSWER, sign_envelope("application/vnd.speaker.time+json",
                                              answer_body(NODE, [never_asked], forged_time, 100), keys))
    node.run(0)
    assert rejected_reasons(node) == ["time_nonce_unknown"]
    assert not trusted(node) and node.app.clock_trust.floor < forged_time - dt.timedelta(days=3000)


def test_replayed_time_answer_is_rejected_and_changes_nothing(node):
    answer = node.answer_time()
    floor = node.app.clock_trust.floor
    node.run(60)
    node.broker.deliver(ANSWER, answer)                  # the same signed bytes again (nonce single use)
    node.run(0)
    assert rejected_reasons(node) == ["time_nonce_unknown"]
    assert node.app.clock_trust.floor >= floor


def test_an_answer_that_waited_more_than_five_seconds_is_stale(node):
    request = [p for t, p, _, _ in node.broker.published if t == REQ][-1]
    answer = TimeSigner(time_keys(node.district), 100).answer(NODE, request, node.clock.wall())
    node.run(1.9)                                        # the next request is due at 2 s: answer the first
    node.run(4)
    node.broker.deliver(ANSWER, answer)
    node.run(0)
    assert "time_nonce_stale" in rejected_reasons(node) and not trusted(node)


def test_a_time_envelope_on_the_command_topic_is_not_time(node):
    request = [p for t, p, _, _ in node.broker.published if t == REQ][-1]
    answer = TimeSigner(time_keys(node.district), 100).answer(NODE, request, node.clock.wall())
    node.deliver(answer)                                 # spk/node/NODE/cmd
    assert rejected_reasons(node) == ["unsupported_type"] and not trusted(node)


def test_a_command_held_without_trusted_time_is_played_when_signed_time_comes(node):
    node.play(node.clip("cho-gio", 5), valid_for=600)
    assert node.records() == [] and node.events("rejected") == []   # held, not refused
    node.run(30)
    node.app.timekeeper.ask()                            # the district comes back: a fresh request, answered
    node.answer_time()
    node.run(30)
    assert [(r["content_id"], r["result"]) for r in node.records()] == [("cho-gio", "completed")]


def test_a_held_command_that_expired_before_time_came_is_rejected_expired_never_played(node):
    node.play(node.clip("het-han", 5), valid_for=20)
    node.run(60)                                         # it expires while the node has no time
    node.app.timekeeper.ask()
    node.answer_time()
    node.run(30)
    assert rejected_reasons(node) == ["expired"] and node.records() == []
    assert node.player.played() == []


def test_a_held_command_is_reported_clock_untrusted_when_no_time_comes_within_120_s(node):
    cid = node.play(node.clip("khong-gio", 5), valid_for=3600)
    node.run(119)
    assert node.events("rejected") == []
    node.run(62)                                         # the minute tick after 120 s
    assert rejected_reasons(node) == ["clock_untrusted"] and node.records() == []
    refusal = node.events("rejected")[-1]["data"]
    assert refusal["command_id"] == cid and len(refusal["envelope_sha256"]) == 64   # the district can match it


def test_a_node_trusted_by_ntp_but_never_answered_tapers_its_requests_off_to_the_refresh_interval(node):
    node.clock.ntp = True                                # NTP works; the district has no time duty
    node.run(4 * 3600)
    asked = len(requests(node))
    assert asked <= 14                                   # 2, 4, ... 4096, then the refresh: not 60 an hour
    node.run(4 * REFRESH_S)
    assert len(requests(node)) - asked == 4              # one per refresh interval once tapered off
