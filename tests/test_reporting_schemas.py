"""The JSON Schemas accept every message the node emits and reject the malformed ones a district must
not silently accept (wrong kind, unknown alarm, missing id, a will pretending to be online...)."""

import pytest

from node.reporting import heartbeat as hb
from node.reporting.outbox import make_event, new_id
from node.schemas import NAMES, SchemaValidationError, errors, load_schema, schema_for, validate

T0 = 1_764_129_000


def play_record(**changes):
    record = {
        "v": 1, "id": new_id(T0), "node": "27787-03", "ts": T0 + 300, "kind": "play",
        "content_id": "bulletin-2026-11-26-am", "sha256": "ab" * 32, "level": "priority",
        "source": "schedule", "command_id": None, "slot_id": "morning@2025-11-26T03:50:00Z", "scheduled_at": T0,
        "started_at": T0 + 2.5, "ended_at": T0 + 290.1, "seconds": 287.6, "result": "completed",
        "volume": 80, "relays": [[T0 + 0.1, "amp", True], [T0 + 2.0, "z1", True], [T0 + 291, "amp", False]],
        "reason": None,
    }
    record.update(changes)
    return record


def test_every_schema_is_valid_draft_2020_12():
    import jsonschema

    for name in NAMES:
        schema = load_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def test_events_validate():
    validate("event", make_event("27787-03", "input_changed", {"input": "door", "active": True}, T0))
    validate("event", make_event("27787-03", "alarm_raised", {"alarm": "mains_lost"}, T0))
    validate("event", make_event("27787-03", "started", {"ver": "0.1.0"}, T0))
    validate("event", make_event("27787-03", "rejected", {
        "reason": "bad_signature", "keyid": "bulletin-1", "command_id": "cmd-77",
        "topic": "spk/node/27787-03/cmd", "detail": "signature does not verify",
        "envelope_sha256": "0f" * 32}, T0))
    validate("event", make_event("27787-03", "rejected", {
        "reason": "too_large", "keyid": None, "command_id": None, "topic": "spk/node/27787-03/cmd",
        "detail": "70000 bytes", "envelope_sha256": None, "suppressed": 3}, T0))


def test_rejected_event_without_envelope_digest_is_invalid():
    # The digest is how a district matches a refusal whose command_id is null: it must always be there.
    data = {"reason": "revoked_key", "keyid": "ab" * 32, "command_id": None, "topic": "t", "detail": "d"}
    assert any("envelope_sha256" in p for p in errors("event", make_event("27787-03", "rejected", data, T0)))
    data["envelope_sha256"] = "not-a-digest"
    assert errors("event", make_event("27787-03", "rejected", data, T0))


def test_rejected_event_without_reason_is_invalid():
    data = {"keyid": None, "command_id": None, "topic": "t", "detail": ""}
    bad = make_event("27787-03", "rejected", data, T0)
    assert any("reason" in problem for problem in errors("event", bad))


def test_alarm_event_with_unknown_alarm_is_invalid():
    with pytest.raises(SchemaValidationError):
        validate("event", make_event("27787-03", "alarm_raised", {"alarm": "aliens"}, T0))


def test_play_record_validates_and_is_routed_by_kind():
    record = play_record()
    assert schema_for(record) == "play_record"
    validate("play_record", record)
    validate("play_record", play_record(result="preempted", reason="emergency preempted", source="command",
                                        command_id="cmd-1", slot_id=None, scheduled_at=None))


@pytest.mark.parametrize("change", [
    {"kind": "event"}, {"result": "maybe"}, {"sha256": "XYZ"}, {"relays": [[T0, "amp"]]},
    {"level": "loud"}, {"id": "short"}, {"extra": 1},
    {"slot_id": "morning"}, {"slot_id": "morning@2025-11-26 03:50"},   # slot id without its UTC start
])
def test_malformed_play_records_are_invalid(change):
    assert errors("play_record", play_record(**change))


def test_missing_play_field_is_invalid():
    record = play_record()
    del record["seconds"]
    assert errors("play_record", record)


def test_offline_will_cannot_carry_snapshot_fields_and_online_snapshot_needs_them():
    will = hb.will_payload("27787-03", 3)
    assert errors("status", will) == []
    assert errors("status", {**will, "online": True})
    assert errors("status", {**will, "temp": 40})
    assert errors("status", {**will, "reason": "shutdown"})  # a clean shutdown says when (ts, seq)


def test_snapshot_with_unknown_alarm_or_field_is_invalid():
    snapshot = hb.build_snapshot("27787-03", 3, 1, {}, T0)
    assert errors("status", snapshot) == []
    assert errors("status", {**snapshot, "alarms": ["aliens"]})
    assert errors("status", {**snapshot, "tmep": 40})


def test_delta_must_change_something():
    assert errors("delta", {"v": 1, "node": "27787-03", "seq": 2, "ts": T0})
    assert errors("delta", {"v": 1, "node": "27787-03", "seq": 2, "ts": T0, "temp": 40}) == []
    assert errors("delta", {"v": 1, "node": "27787-03", "seq": 2, "ts": T0, "up": 40})


def test_unknown_schema_name_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown schema"):
        load_schema("statsu")
