"""The update state machine and its resume table: a power cut in any state leads to a committed new
version or the old version running, never to neither, and never to a second install of a bad version."""

import os

import pytest

from node.update import guard
from node.update import state as st
from node.update.tree import FakeReleaseTree, InstallError, ReleaseTree, UpdateStateFile

S = st.UpdateState


def names(actions):
    return [a.name for a in actions]


def accepted():
    return st.step(st.UpdateRecord(), st.Accepted("0.2.0", "0.1.0", "{envelope}"))[0]


def test_happy_path_walks_every_state_in_order_and_reports_committed():
    r = accepted()
    assert r.state is S.PENDING
    r, a = st.step(r, st.Go())
    assert (r.state, names(a)) == (S.DOWNLOADING, ["emit", "download"])
    assert a[0].data["type"] == "update_started"
    r, a = st.step(r, st.Downloaded())
    assert (r.state, names(a)) == (S.INSTALLING, ["install"])
    r, a = st.step(r, st.Installed())
    assert (r.state, names(a)) == (S.SWITCHING, ["emit", "switch"])
    r, a = st.step(r, st.Switched())
    assert (r.state, names(a)) == (S.TRIAL, ["restart"])
    r, a = st.step(r, st.Starting("0.2.0", counting=True))
    assert (r.state, r.starts) == (S.TRIAL, 1)
    r, a = st.step(r, st.Healthy())
    assert (r.state, names(a)) == (S.COMMITTING, ["link_committed"])
    r, a = st.committed(r)
    assert r.state is S.IDLE
    assert r.outcomes == ({"version": "0.2.0", "previous": "0.1.0", "outcome": "committed", "reason": None},)
    r, _ = st.step(r, st.Reported(1))
    assert r.outcomes == ()


def test_unhealthy_trial_rolls_back_and_marks_the_version_known_bad():
    r = st.UpdateRecord(S.TRIAL, "0.2.0", "0.1.0", "{}", starts=1)
    r, a = st.step(r, st.Unhealthy("broker not connected"))
    assert (r.state, names(a)) == (S.ROLLING_BACK, ["link_previous", "restart"])
    assert a[0].data == {"version": "0.1.0"}
    r, a = st.step(r, st.Starting("0.1.0"))
    assert r.state is S.IDLE and r.known_bad == ("0.2.0",)
    assert r.outcomes[-1]["outcome"] == "rolled_back"
    assert r.outcomes[-1]["reason"] == "broker not connected"


def test_a_version_that_crashes_at_every_start_is_rolled_back_by_the_guard_after_max_starts():
    r = st.UpdateRecord(S.TRIAL, "0.2.0", "0.1.0", "{}")
    for n in range(1, st.MAX_TRIAL_STARTS + 1):
        r, a = st.step(r, st.Starting("0.2.0", counting=True))
        assert (r.state, r.starts, a) == (S.TRIAL, n, [])
    r, a = st.step(r, st.Starting("0.2.0", counting=True))
    assert (r.state, names(a)) == (S.ROLLING_BACK, ["link_previous", "restart"])
    assert "without passing its health check" in r.reason


def test_the_daemon_itself_does_not_count_starts_only_the_guard_does():
    r = st.UpdateRecord(S.TRIAL, "0.2.0", "0.1.0", "{}", starts=2)
    assert st.step(r, st.Starting("0.2.0", counting=False)) == (r, [])


def test_failure_before_the_switch_leaves_the_running_version_and_reports_failed():
    for before in (S.PENDING, S.DOWNLOADING, S.INSTALLING):
        r = st.UpdateRecord(before, "0.2.0", "0.1.0", "{}")
        r, a = st.step(r, st.Failed("download_failed"))
        assert r.state is S.IDLE and names(a) == ["prune"]
        assert r.outcomes[-1] == {"version": "0.2.0", "previous": "0.1.0", "outcome": "failed",
                                  "reason": "download_failed"}
        assert r.known_bad == ()        # a failed download may be retried by a new command


@pytest.mark.parametrize("event", [st.Go(), st.Downloaded(), st.Installed(), st.Switched(), st.Healthy()])
def test_events_out_of_order_are_a_transition_error_not_a_silent_change(event):
    with pytest.raises(st.TransitionError):
        st.step(st.UpdateRecord(), event)


def test_a_second_update_while_one_is_in_progress_is_a_transition_error():
    with pytest.raises(st.TransitionError):
        st.step(accepted(), st.Accepted("0.3.0", "0.1.0", "{}"))


# A power cut in each state, then a start of whatever `current` names: (state, version running after the
# cut) -> (state after the start, actions). This is the RESUME table, executed.
RESUME_CASES = [
    (S.IDLE, "0.1.0", S.IDLE, []),
    (S.PENDING, "0.1.0", S.PENDING, []),
    (S.DOWNLOADING, "0.1.0", S.DOWNLOADING, ["download"]),
    (S.INSTALLING, "0.1.0", S.INSTALLING, ["install"]),
    (S.SWITCHING, "0.1.0", S.SWITCHING, ["switch"]),       # cut before the rename
    (S.SWITCHING, "0.2.0", S.TRIAL, []),                   # cut after the rename, before the record
    (S.TRIAL, "0.2.0", S.TRIAL, []),
    (S.TRIAL, "0.1.0", S.IDLE, ["prune"]),                 # current was put back: rolled back
    (S.COMMITTING, "0.2.0", S.COMMITTING, ["link_committed"]),
    (S.ROLLING_BACK, "0.2.0", S.ROLLING_BACK, ["link_previous", "restart"]),
    (S.ROLLING_BACK, "0.1.0", S.IDLE, ["prune"]),
]


@pytest.mark.parametrize("cut_in,running,then,actions", RESUME_CASES)
def test_power_cut_in_each_state_resumes_as_the_table_says(cut_in, running, then, actions):
    r = st.UpdateRecord(cut_in, "0.2.0", "0.1.0", "{}", starts=1)
    new, acts = st.step(r, st.Starting(running, counting=True))
    assert new.state is then
    assert names(acts) == actions


def test_every_state_has_a_resume_row():
    assert set(st.RESUME) == set(S)


def test_record_round_trips_through_json():
    r = st.UpdateRecord(S.TRIAL, "0.2.0", "0.1.0", "{x}", starts=2, reason="r", known_bad=("0.1.5",),
                        outcomes=({"version": "0.1.5", "previous": "0.1.0", "outcome": "rolled_back",
                                   "reason": "x"},))
    assert st.UpdateRecord.from_json(r.to_json()) == r


def test_damaged_state_file_is_moved_aside_and_updates_start_over(tmp_path):
    path = tmp_path / "update.json"
    path.write_text("{not json")
    record = UpdateStateFile(path).load()
    assert record.state is S.IDLE and "damaged" in record.reason
    assert (tmp_path / "update.damaged").read_text() == "{not json"


def test_state_file_write_is_atomic_replace(tmp_path):
    f = UpdateStateFile(tmp_path / "update.json")
    f.save(accepted())
    assert f.load().state is S.PENDING
    assert not (tmp_path / "update.tmp").exists()


def _fake_release(tree: ReleaseTree, version: str) -> None:
    venv = tree.venv(version) / "bin"
    venv.mkdir(parents=True)
    (venv / "speaker-node").write_text("#!/bin/sh\n")
    (tree.releases / version / ".complete").write_text(version)


def test_links_switch_atomically_and_refuse_an_incomplete_release(tmp_path):
    tree = ReleaseTree(tmp_path)
    assert not tree.updatable()
    _fake_release(tree, "0.1.0")
    tree.point("current", "0.1.0")
    tree.point("committed", "0.1.0")
    assert (tree.current(), tree.committed(), tree.updatable()) == ("0.1.0", "0.1.0", True)
    (tree.releases / "0.2.0" / "venv").mkdir(parents=True)      # half-installed: no .complete
    with pytest.raises(InstallError):
        tree.point("current", "0.2.0")
    assert tree.current() == "0.1.0"
    _fake_release(tree, "0.3.0")
    tree.point("current", "0.3.0")
    assert os.readlink(tmp_path / "current") == "releases/0.3.0"
    assert tree.prune(keep=set()) == ["0.2.0"]                  # current and committed always kept


def test_guard_points_current_back_after_too_many_starts(tmp_path):
    tree = ReleaseTree(tmp_path / "opt")
    for v in ("0.1.0", "0.2.0"):
        _fake_release(tree, v)
    tree.point("committed", "0.1.0")
    tree.point("current", "0.2.0")
    state = UpdateStateFile(tmp_path / "update.json")
    state.save(st.UpdateRecord(S.TRIAL, "0.2.0", "0.1.0", "{}"))
    for _ in range(st.MAX_TRIAL_STARTS):
        assert guard.before_start(tree, state) == "0.2.0"
    assert guard.before_start(tree, state) == "0.1.0"
    assert state.load().state is S.ROLLING_BACK
    assert tree.current() == "0.1.0" and tree.committed() == "0.1.0"


def test_fake_tree_records_what_the_service_did():
    tree = FakeReleaseTree("0.1.0")
    tree.install("0.2.0", None, "speaker-node")
    tree.point("current", "0.2.0")
    assert tree.history == [("install", "0.2.0"), ("point", "current", "0.2.0")]
    with pytest.raises(InstallError):
        FakeReleaseTree("0.1.0").point("current", "9.9.9")


def test_guard_supervisor_rolls_back_a_trial_version_that_hangs(tmp_path):
    """A new version that neither crashes nor commits: the guard kills it at the deadline and starts the
    previous version, which then reports the rollback (its own start sees rolling_back)."""
    tree = ReleaseTree(tmp_path / "opt")
    for v, script in (("0.1.0", "#!/bin/sh\necho old >> \"$0.ran\"\nexit 0\n"),
                      ("0.2.0", "#!/bin/sh\nexec sleep 600\n")):
        venv = tree.venv(v) / "bin"
        venv.mkdir(parents=True)
        (venv / "speaker-node").write_text(script)
        (venv / "speaker-node").chmod(0o755)
        (tree.releases / v / ".complete").write_text(v)
    tree.point("committed", "0.1.0")
    tree.point("current", "0.2.0")
    state = UpdateStateFile(tmp_path / "update.json")
    state.save(st.UpdateRecord(S.TRIAL, "0.2.0", "0.1.0", "{}"))
    rc = guard.supervise(tree, state, ["run"], trial_deadline_s=1.0, poll_s=0.05)
    assert rc == 0                                    # the old version ran and exited cleanly
    assert tree.current() == "0.1.0" and tree.committed() == "0.1.0"
    assert (tree.venv("0.1.0") / "bin" / "speaker-node.ran").read_text() == "old\n"
    record = state.load()
    assert record.state is S.IDLE and record.known_bad == ("0.2.0",)
    assert record.outcomes[-1]["outcome"] == "rolled_back" and "hung" in record.outcomes[-1]["reason"]
