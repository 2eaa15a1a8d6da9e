"""Least privilege for the always-online district service (issue 9 review, item 8).

An intruder on the district server gets whatever `speaker-district serve` holds. Attack: the time key
also signing schedules and config. Safe: the online keys are `time` (role time only) and `collector`
(ack only), and an older workspace migrates with one trust update."""

from __future__ import annotations

import pytest

from node.trust.keys import keyid_of_key
from node.trust.trustdoc import load_trust_file, verify_trust_update
from provisioning.district import send
from provisioning.district import workspace as workspace_module
from provisioning.district.timeservice import time_keys
from provisioning.district.workspace import ONLINE_ROLES, Workspace, WorkspaceError, bump_trust, init_workspace


def test_time_service_signs_with_a_key_that_holds_only_the_time_role(district_ws):
    # The time duty runs online all the time (speaker-district serve), so its key is the one an attacker
    # who breaks into the district server gets first. The collector got a key of its own ("ack") for that.
    workspace = Workspace.load(district_ws)
    trust = load_trust_file(district_ws / "trust.json")

    roles = {role for key in time_keys(workspace) for role in trust.keys[keyid_of_key(key)].roles}
    # Safe: the online time key cannot sign schedules or remote config (or anything but time answers).
    assert roles == {"time"}, f"the time service's key also holds {sorted(roles - {'time'})}"


def test_no_offline_key_holds_an_online_role_and_no_online_key_an_offline_one(district_ws):
    trust = Workspace.load(district_ws).trust
    holders = {role: sorted(k.name for k in trust.keys.values() if role in k.roles) for role in ONLINE_ROLES}
    assert holders == {"time": ["time"], "ack": ["collector"]}
    assert trust.key_named("time").roles == {"time"} and trust.key_named("collector").roles == {"ack"}
    assert trust.key_named("schedule").roles == {"schedule", "config"}


def test_dropping_a_role_a_key_lacks_or_its_last_role_is_refused(tmp_path):
    init_workspace(tmp_path / "ws")
    with pytest.raises(WorkspaceError, match="does not hold time"):
        bump_trust(tmp_path / "ws", drop_roles={"schedule": ["time"]})
    with pytest.raises(WorkspaceError, match="no role; revoke it instead"):
        bump_trust(tmp_path / "ws", drop_roles={"time": ["time"]})
    assert load_trust_file(tmp_path / "ws" / "trust.json").version == 1


def test_a_workspace_from_before_the_time_key_migrates_with_one_trust_update(tmp_path, monkeypatch, capsys):
    # A workspace made before issue 9: no `time` key, `schedule` holding schedule + config + time.
    old_roles = dict(workspace_module.KEY_ROLES, schedule=["schedule", "config", "time"])
    del old_roles["time"]
    monkeypatch.setattr(workspace_module, "KEY_ROLES", old_roles)
    ws_dir = tmp_path / "ws"
    init_workspace(ws_dir)
    monkeypatch.undo()
    v1 = load_trust_file(ws_dir / "trust.json")

    with pytest.raises(RuntimeError, match="--add-key time:time --drop-role schedule:time"):
        time_keys(Workspace.load(ws_dir))     # the broad schedule key is never used online

    assert send.main([str(ws_dir), "trust", "--add-key", "time:time", "--drop-role", "schedule:time",
                      "--print"]) == 0
    envelope = capsys.readouterr().out.strip().encode()
    v2 = verify_trust_update(envelope, current_trust=v1, now_or_floor=v1.issued_at)  # a normal update from v1
    assert v2.version == 2
    assert v2.key_named("schedule").roles == {"schedule", "config"}
    assert v2.key_named("schedule").keyid == v1.key_named("schedule").keyid   # same key, one role fewer
    assert v2.key_named("time").roles == {"time"}
    assert [keyid_of_key(k) for k in time_keys(Workspace.load(ws_dir))] == [v2.key_named("time").keyid]
