"""UpdateService and the privileged applier with recording fakes: deferral while on air, the download
never trusted before it is hashed again, every persisted state, and the root-side steps."""

from __future__ import annotations

import hashlib

import pytest
from test_update_release import TRUST, signed_release, update_command

from node.loop import EventLoop
from node.trust.commands import parse_command
from node.trust.envelope import parse_envelope
from node.update import apply
from node.update import state as st
from node.update.service import UpdateService, quiet_reason
from node.update.tree import FakeReleaseTree, UpdateStateFile

WHEEL_BYTES = b"pretend this is a wheel" * 100
WHEEL = {"name": "speaker_node-0.2.0-py3-none-any.whl", "sha256": hashlib.sha256(WHEEL_BYTES).hexdigest(),
         "length": len(WHEEL_BYTES)}
S = st.UpdateState


class FakeDownloader:
    def __init__(self, data=WHEEL_BYTES):
        self.data, self.urls = data, []

    def fetch(self, url, dest, sha256, length, cancel=None, progress=None):
        self.urls.append(url)
        dest.write_bytes(self.data)
        return dest


class Harness:
    def __init__(self, tmp_path, *, quiet=None, privileged=False, downloader=None, tree=None):
        self.now_mono = 1000.0
        self.loop = EventLoop(lambda: self.now_mono)
        self.events: list[tuple[str, dict]] = []
        self.quiet_answers = list(quiet or [])
        self.requests = 0
        self.restarts = 0
        self.healthy = {"broker_connected": True}
        self.tree = tree or FakeReleaseTree("0.1.0")
        self.state_file = UpdateStateFile(tmp_path / "update.json")
        self.downloader = downloader or FakeDownloader()
        self.service = UpdateService(
            node_id="27787-03", running="0.1.0", architecture="arm64", python="3.11", tree=self.tree,
            state_file=self.state_file, staging_root=tmp_path / "staging", downloader=self.downloader,
            loop=self.loop, emit=lambda t, d: self.events.append((t, d)), trust=lambda: TRUST,
            quiet=self._quiet, health=lambda: dict(self.healthy), restart=self._restart,
            request_install=self._request if privileged else None, health_deadline_s=30,
            monotonic=lambda: self.now_mono)

    def _quiet(self):
        return self.quiet_answers.pop(0) if self.quiet_answers else None

    def _restart(self):
        self.restarts += 1

    def _request(self):
        self.requests += 1

    def send(self, **over):
        envelope = update_command(signed_release(files=[WHEEL], **over))
        command = parse_command(parse_envelope(envelope).payload)
        self.service.on_command(command, envelope)

    def run_until(self, predicate, advance=0.0, rounds=400):
        for _ in range(rounds):
            if predicate():
                return
            self.now_mono += advance
            self.loop.run_once(max_wait=0.05)
        raise AssertionError(f"not reached; events {self.events}, state {self.service.record.state}")

    def kinds(self):
        return [t for t, _ in self.events]


def test_update_is_deferred_while_on_air_and_starts_when_quiet(tmp_path):
    h = Harness(tmp_path, quiet=["on_air", "on_air", "slot_due"])
    h.send()
    assert h.service.record.state is S.PENDING
    assert h.kinds() == ["update_deferred"]
    assert h.events[0][1] == {"version": "0.2.0", "reason": "on_air"}
    h.run_until(lambda: h.restarts == 1, advance=31)
    assert h.service.record.state is S.TRIAL
    # one deferral event per reason, not one per poll
    assert h.kinds()[:3] == ["update_deferred", "update_deferred", "update_started"]
    assert h.events[1][1]["reason"] == "slot_due"
    assert h.tree.history == [("install", "0.2.0"), ("point", "current", "0.2.0")]
    assert h.state_file.load().state is S.TRIAL       # persisted before the restart


def test_downloaded_file_that_does_not_match_the_signed_hash_is_never_installed(tmp_path):
    h = Harness(tmp_path, downloader=FakeDownloader(b"tampered" * 300))
    h.send()
    h.run_until(lambda: h.service.record.state is S.IDLE and h.events[-1][0] == "update_refused")
    assert h.events[-1][1]["reason"] == "release_file_mismatch"
    assert ("install", "0.2.0") not in h.tree.history
    assert h.tree.current() == "0.1.0" and h.restarts == 0


def test_new_version_commits_only_after_its_health_check_passes(tmp_path):
    tree = FakeReleaseTree("0.1.0")
    tree.installed.add("0.2.0")
    tree.links["current"] = "0.2.0"
    state = UpdateStateFile(tmp_path / "update.json")
    state.save(st.UpdateRecord(S.TRIAL, "0.2.0", "0.1.0", "{}", starts=1))
    h = Harness(tmp_path, tree=tree)
    h.service.running = "0.2.0"
    h.healthy = {"broker_connected": False, "status_published": False}
    h.service.start()
    h.run_until(lambda: False if h.now_mono < 1010 else True, advance=1)
    assert h.service.record.state is S.TRIAL and tree.committed() == "0.1.0"
    h.healthy = {"broker_connected": True, "status_published": True}
    h.run_until(lambda: h.service.record.state is S.IDLE, advance=1)
    assert tree.committed() == "0.2.0"
    assert ("update_committed", {"version": "0.2.0", "previous": "0.1.0", "reason": None}) in h.events


def test_new_version_that_stays_unhealthy_rolls_back_at_the_deadline(tmp_path):
    tree = FakeReleaseTree("0.1.0")
    tree.installed.add("0.2.0")
    tree.links["current"] = "0.2.0"
    UpdateStateFile(tmp_path / "update.json").save(st.UpdateRecord(S.TRIAL, "0.2.0", "0.1.0", "{}", starts=1))
    h = Harness(tmp_path, tree=tree)
    h.service.running = "0.2.0"
    h.healthy = {"broker_connected": False, "trust_loaded": True}
    h.service.start()
    h.run_until(lambda: h.service.record.state is S.ROLLING_BACK, advance=1)
    assert tree.current() == "0.1.0" and tree.committed() == "0.1.0"
    assert "broker_connected" in h.service.record.reason and "trust_loaded" not in h.service.record.reason
    h.run_until(lambda: h.restarts == 1)


@pytest.mark.parametrize("over,reason", [({"version": "0.1.0"}, "already_running"),
                                         ({"architectures": ["armhf"]}, "platform"),
                                         ({"min_version": "0.1.5"}, "min_version")])
def test_refused_updates_say_why_and_change_nothing(tmp_path, over, reason):
    h = Harness(tmp_path)
    h.send(**over)
    assert h.kinds() == ["update_refused"] and h.events[0][1]["reason"] == reason
    assert h.service.record.state is S.IDLE and h.tree.history == []


def test_node_outside_the_rollout_percentage_does_nothing(tmp_path):
    h = Harness(tmp_path)
    envelope = update_command(signed_release(files=[WHEEL]), rollout={"percent": 1, "salt": "nobody-here"})
    command = parse_command(parse_envelope(envelope).payload)
    from node.update.release import in_rollout
    assert not in_rollout("27787-03", 1, "nobody-here")
    h.service.on_command(command, envelope)
    assert h.events == [] and h.service.record.state is S.IDLE


def test_pending_update_survives_a_restart_and_its_stored_command_is_verified_again(tmp_path):
    h = Harness(tmp_path, quiet=["on_air"])
    h.send()
    assert h.state_file.load().state is S.PENDING
    h2 = Harness(tmp_path)
    h2.service.start()
    h2.run_until(lambda: h2.service.record.state is S.TRIAL)
    record = h2.state_file.load()
    forged = record.command.replace('"sig":"', '"sig":"AAAA', 1)
    h2.state_file.save(st.UpdateRecord(S.PENDING, "0.2.0", "0.1.0", forged))
    h3 = Harness(tmp_path)
    h3.service.start()
    assert h3.service.record.state is S.IDLE
    assert h3.events[-1][0] == "update_refused"


def test_privileged_node_asks_root_to_install_and_root_switches_and_restarts_the_unit(tmp_path):
    h = Harness(tmp_path, privileged=True)
    h.send()
    h.run_until(lambda: h.service.record.state is S.INSTALLING)
    h.run_until(lambda: h.requests == 1)
    assert h.tree.history == []                    # the daemon itself installs nothing
    restarts = []
    record = apply.apply_pending(h.state_file.load(), tree=h.tree, state_file=h.state_file, trust=TRUST,
                                 staging_root=tmp_path / "staging", restart_unit=lambda: restarts.append(1))
    assert record.state is S.TRIAL and restarts == [1]
    assert h.tree.history == [("install", "0.2.0"), ("point", "current", "0.2.0")]
    h.run_until(lambda: "update_installed" in h.kinds(), advance=2.5)   # the daemon reports root's work
    # The new version passes its check: root renames `committed`.
    committing = st.step(h.state_file.load(), st.Healthy())[0]
    h.state_file.save(committing)
    record = apply.apply_pending(committing, tree=h.tree, state_file=h.state_file, trust=TRUST,
                                 staging_root=tmp_path / "staging", restart_unit=lambda: restarts.append(2))
    assert record.state is S.IDLE and h.tree.committed() == "0.2.0" and restarts == [1]


def test_privileged_rollback_points_current_back_and_restarts(tmp_path):
    tree = FakeReleaseTree("0.1.0")
    tree.installed.add("0.2.0")
    tree.links["current"] = "0.2.0"
    restarts = []
    state = UpdateStateFile(tmp_path / "update.json")
    record = st.UpdateRecord(S.ROLLING_BACK, "0.2.0", "0.1.0", "{}", reason="health")
    apply.apply_pending(record, tree=tree, state_file=state, trust=TRUST, staging_root=tmp_path,
                        restart_unit=lambda: restarts.append(1))
    assert tree.current() == "0.1.0" and restarts == [1]


def test_quiet_reason_table():
    assert quiet_reason(on_air=True, pending_items=0, next_slot_in=None, quiet_before_slot=600) == "on_air"
    assert quiet_reason(on_air=False, pending_items=2, next_slot_in=None, quiet_before_slot=600) == "items_queued"
    assert quiet_reason(on_air=False, pending_items=0, next_slot_in=599, quiet_before_slot=600) == "slot_due"
    assert quiet_reason(on_air=False, pending_items=0, next_slot_in=601, quiet_before_slot=600) is None
    assert quiet_reason(on_air=False, pending_items=0, next_slot_in=None, quiet_before_slot=600) is None



def test_second_update_downloads_only_the_wheels_that_changed(tmp_path):
    dep = b"an unchanged dependency wheel" * 50
    dep_file = {"name": "paho_mqtt-2.1.0-py3-none-any.whl", "sha256": hashlib.sha256(dep).hexdigest(),
                "length": len(dep)}

    class ByName(FakeDownloader):
        def fetch(self, url, dest, sha256, length, cancel=None, progress=None):
            self.urls.append(url)
            dest.write_bytes(dep if "paho" in url else WHEEL_BYTES)
            return dest

    earlier = tmp_path / "staging" / "0.1.0"
    earlier.mkdir(parents=True)
    (earlier / dep_file["name"]).write_bytes(dep)               # what the running version came with
    h = Harness(tmp_path, downloader=ByName())
    envelope = update_command(signed_release(files=[WHEEL, dep_file]))
    h.service.on_command(parse_command(parse_envelope(envelope).payload), envelope)
    h.run_until(lambda: h.restarts == 1)
    assert h.downloader.urls == ["https://district.example/rel/0.2.0/" + WHEEL["name"]]
    assert (tmp_path / "staging" / "0.2.0" / dep_file["name"]).read_bytes() == dep
