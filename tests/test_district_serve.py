"""`speaker-district serve`: duties start in order and stop in reverse, and the time duty answers a
node's nonce with signed time over the real broker and ACL - and nobody else can answer for it."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time

import pytest
from support import Probe, node_tls

from node.trust import reasons
from node.trust.timeanswer import SignedTime, request_body, verify_time_answer
from node.trust.trustdoc import load_trust_file
from provisioning.district.serve import DistrictServer
from provisioning.district.serve_dir import export_serve_dir
from provisioning.district.timeservice import TimeService


class RecordingDuty:
    def __init__(self, name, log, fail=False):
        self.name, self.log, self.fail = name, log, fail

    def start(self):
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(("start", self.name))

    def stop(self):
        self.log.append(("stop", self.name))


def test_duties_start_in_order_and_stop_in_reverse():
    log = []
    with DistrictServer([RecordingDuty("time", log), RecordingDuty("records", log)]) as server:
        assert server.running == ["time", "records"]
    assert log == [("start", "time"), ("start", "records"), ("stop", "records"), ("stop", "time")]


def test_a_duty_that_fails_to_start_stops_the_ones_already_running():
    log = []
    server = DistrictServer([RecordingDuty("time", log), RecordingDuty("records", log, fail=True)])
    with pytest.raises(RuntimeError):
        server.start()
    assert log == [("start", "time"), ("stop", "time")]
    assert server.running == []


@pytest.fixture
def time_service(district_ws, broker):
    service = TimeService(district_ws, broker.address)
    service.start()
    yield service
    service.stop()


def _ask(probe, node_id):
    nonce = secrets.token_hex(32)
    sent = time.monotonic()
    assert probe.publish(f"spk/node/{node_id}/time/req", request_body(nonce), qos=1)
    msg = probe.messages.get(timeout=10)
    return nonce, sent, msg, time.monotonic()


def test_time_service_answers_a_nodes_nonce_with_signed_time(district_ws, broker, time_service):
    probe = Probe(broker, node_tls(district_ws, "27787-01"), "27787-01", subscribe=["spk/node/27787-01/time"])
    try:
        nonce, sent, msg, received = _ask(probe, "27787-01")
    finally:
        probe.close()
    assert msg.topic == "spk/node/27787-01/time" and not msg.retain
    result = verify_time_answer(msg.payload, trust=load_trust_file(district_ws / "trust.json"), node_id="27787-01",
                                issued={nonce: sent}, received_monotonic=received)
    assert isinstance(result, SignedTime), result
    assert result.nonce == nonce and result.uncertainty_s < 2.5
    assert abs(result.time.timestamp() - time.time()) < 5


def test_another_node_can_neither_request_nor_answer_for_a_node(district_ws, broker, time_service):
    victim = Probe(broker, node_tls(district_ws, "27787-01"), "27787-01", subscribe=["spk/node/27787-01/time"])
    other = Probe(broker, node_tls(district_ws, "27787-02"), "27787-02")
    try:
        forged = json.dumps({"payloadType": "application/vnd.speaker.time+json", "payload": "e30=",
                             "signatures": [{"keyid": "00", "sig": "AA=="}]}).encode()
        other.publish("spk/node/27787-01/time", forged, qos=1)            # answer for someone else
        other.publish("spk/node/27787-01/time/req", request_body(secrets.token_hex(32)), qos=1)
        victim.publish("spk/node/27787-01/time", forged, qos=1)           # a node answering itself
        # The negative check waits for an event: the victim's own request, sent after those three were
        # PUBACKed, is answered through the same broker and service. Anything the broker wrongly let
        # through (a forged answer, or the service's answer to the other node's request) reaches the victim
        # before that answer, so the answer must be the first and only message it got.
        nonce, sent, msg, received = _ask(victim, "27787-01")
        answer = verify_time_answer(msg.payload, trust=load_trust_file(district_ws / "trust.json"),
                                    node_id="27787-01", issued={nonce: sent}, received_monotonic=received)
        assert isinstance(answer, SignedTime) and answer.nonce == nonce, answer
        assert [payload for _, payload, _ in victim.seen] == [bytes(msg.payload)]
    finally:
        victim.close()
        other.close()


def test_malformed_request_gets_no_answer(district_ws, broker, time_service):
    assert time_service.handle("spk/node/27787-01/time/req", b'{"v":1,"nonce":"short"}') is None
    assert time_service.handle("spk/node/27787-01/time/req", b"not json") is None
    assert time_service.handle("spk/node/27787-01/status", request_body("a" * 64)) is None
    topic, answer = time_service.handle("spk/node/27787-01/time/req", request_body("a" * 64))
    assert topic == "spk/node/27787-01/time"
    wrong = verify_time_answer(answer, trust=load_trust_file(district_ws / "trust.json"), node_id="27787-02",
                               issued={"a" * 64: time.monotonic()}, received_monotonic=time.monotonic())
    assert wrong.reason == reasons.WRONG_TARGET


def test_a_flood_of_requests_from_one_node_is_rate_limited(district_ws, broker, time_service):
    answered = [time_service.handle("spk/node/27787-02/time/req", request_body(secrets.token_hex(32)))
                for _ in range(50)]
    assert sum(1 for a in answered if a) <= 6
    assert time_service.handle("spk/node/27788-01/time/req", request_body(secrets.token_hex(32)))  # others unaffected


def test_serve_command_runs_the_time_duty_until_sigterm(district_ws, broker, python_exe, tmp_path):
    online = tmp_path / "serve"     # what the district server holds (no offline key: serve refuses those)
    export_serve_dir(district_ws, online)
    proc = subprocess.Popen([python_exe, "-m", "provisioning.district.cli", "serve", str(online),
                             "--broker", broker.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        line = proc.stdout.readline()
        assert "running time" in line, line + proc.stderr.read() if proc.poll() is not None else line
        probe = Probe(broker, node_tls(district_ws, "27788-01"), "27788-01", subscribe=["spk/node/27788-01/time"])
        try:
            _, _, msg, _ = _ask(probe, "27788-01")
            assert msg.topic == "spk/node/27788-01/time"
        finally:
            probe.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_a_directory_that_is_not_a_workspace(tmp_path, python_exe):
    res = subprocess.run([python_exe, "-m", "provisioning.district.cli", "serve", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "not a district workspace" in res.stderr


