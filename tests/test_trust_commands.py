"""The command parser alone (node/trust/commands.py), one fault at a time, exact reason and detail.

Pure and fast: parse_command takes the payload bytes after the signature check, so no signing is needed
here (the verifier's tests prove the order of checks around it). Each row changes one field of a valid
command; a check that is weakened, removed or names the wrong field lets the command through or fails
with another detail, and the row fails. Limits are tested at their exact value and one past it.
"""

import copy
import datetime as dt
import json

import pytest
from trust_fixtures import V

from node.errors import RemoteDataError
from node.trust.commands import (
    CODECS,
    COMMAND_TYPES,
    DEFAULT_LIMITS,
    LEVELS,
    ConfigBody,
    Limits,
    LiveBody,
    PlayBody,
    ScheduleBody,
    StopBody,
    TimeBody,
    UpdateBody,
    parse_command,
)

CID = "parser-fault-table-01"
HTTPS = "https://district.example/a.mp3"


def payload(kind="play", body=None, **fields) -> bytes:
    document = V.command(kind, V.play_body() if body is None else body, cid=CID)
    if body is _DROP:
        del document["body"]
    for name, value in fields.items():
        if value is _DROP:
            del document[name]
        else:
            document[name] = value
    return json.dumps(document, ensure_ascii=False).encode()


_DROP = object()


def parse(kind="play", body=None, limits=DEFAULT_LIMITS, **fields):
    return parse_command(payload(kind, body, **fields), limits)


def fault(kind="play", body=None, limits=DEFAULT_LIMITS, **fields) -> tuple[str, str]:
    with pytest.raises(RemoteDataError) as info:
        parse(kind, body, limits, **fields)
    return info.value.reason, info.value.detail


def play_with(**changes) -> dict:
    body = V.play_body()
    for name, value in changes.items():
        if value is _DROP:
            del body[name]
        else:
            body[name] = value
    return body


def live_body(**changes) -> dict:
    body = {"url": "https://radio.example/vov1", "max_duration": 1800, "level": "normal"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


def schedule_with(slot=None, once=None, **changes) -> dict:
    body = V.schedule_body(5)
    if slot is not None:
        body["slots"][0] = {k: v for k, v in {**body["slots"][0], **slot}.items() if v is not _DROP}
    if once is not None:
        body["once"][0] = {k: v for k, v in {**body["once"][0], **once}.items() if v is not _DROP}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


def update_body(**changes) -> dict:
    body = {"release": "eyJ2IjoxfQ==", "files_url": "https://district.example/releases/1.2.0/"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


# -- the envelope of the command: version, type, fields, id, targets, times ------------------------------

@pytest.mark.parametrize("fields,reason,detail", [
    ({"v": 2}, "unsupported_version", "command v=2"),
    ({"v": True}, "unsupported_version", "command v=True"),
    ({"v": "1" * 30}, "unsupported_version", "command v=" + "1" * 20),
    ({"type": "reboot"}, "unsupported_type", "command type 'reboot'"),
    ({"type": "x" * 50}, "unsupported_type", "command type " + repr("x" * 40)),
    ({"type": 7}, "unsupported_type", "command type '7'"),
    ({"v": _DROP}, "malformed", "command.v is missing"),
    ({"type": _DROP}, "malformed", "command.type is missing"),
    ({"body": _DROP}, "malformed", "command.body is missing"),
    ({"issued_at": _DROP}, "malformed", "command.issued_at is missing"),
    ({"extra": 1}, "malformed", "command.extra is not a known field"),
    ({"f" * 50: 1}, "malformed", "command." + "f" * 40 + " is not a known field"),
    ({"id": 12}, "malformed", "id must be a string"),
    ({"id": None}, "malformed", "id must be a string"),
    ({"not_before": None}, "malformed", "not_before time must be a string"),
    ({"id": "short-id"}, "malformed", "id has an invalid value 'short-id'"),
    ({"id": "a" * 65}, "limit_exceeded", "id is 65 characters, limit 64"),
    ({"id": "bad id with spaces!!"}, "malformed", "id has an invalid value 'bad id with spaces!!'"),
    ({"targets": "27787-03"}, "malformed", "targets must be a list"),
    ({"targets": []}, "malformed", "targets must not be empty"),
    ({"targets": ["27787-03"] * 65}, "limit_exceeded", "targets has 65 items, limit 64"),
    ({"targets": ["27787-03", 5]}, "malformed", "targets[1] must be a string"),
    ({"targets": ["27787-3"]}, "malformed", "targets[0] has an invalid value '27787-3'"),
    ({"targets": ["c" + "1" * 16]}, "limit_exceeded", "targets[0] is 17 characters, limit 16"),
    ({"not_before": "yesterday"}, "malformed",
     "not_before not an RFC 3339 time: 'yesterday' (want e.g. 2026-11-26T05:30:00Z)"),
    ({"expires": 5}, "malformed", "expires time must be a string"),
    ({"issued_at": "2026-02-30T00:00:00Z"}, "malformed", "issued_at impossible date/time "
     "'2026-02-30T00:00:00Z': day is out of range for month"),
    ({"expires": "2026-11-26T05:20:00Z"}, "malformed", "expires must be after not_before"),  # == not_before
])
def test_each_command_field_fault_has_its_reason_and_detail(fields, reason, detail):
    assert fault(**fields) == (reason, detail)


@pytest.mark.parametrize("document,detail", [
    ([], "command must be a JSON object"),
    ("play", "command must be a JSON object"),
    (None, "command must be a JSON object"),
])
def test_a_payload_that_is_not_an_object_is_malformed(document, detail):
    with pytest.raises(RemoteDataError) as info:
        parse_command(json.dumps(document).encode())
    assert (info.value.reason, info.value.detail) == ("malformed", detail)


def test_a_payload_that_is_not_json_names_the_command():
    with pytest.raises(RemoteDataError) as info:
        parse_command(b'{"v":1,"v":1}')
    assert (info.value.reason, info.value.detail) == ("malformed", "command: not valid JSON (duplicate key 'v')")


def test_a_genuine_play_command_keeps_every_field():
    command = parse(body=play_with(volume=70, zones=["loa-cho", "loa-dinh"], start_at="2026-11-26T06:00:00Z"))
    assert (command.type, command.id, command.targets) == ("play", CID, (V.NODE_ID,))
    assert command.issued_at == command.not_before == V.NOW - dt.timedelta(minutes=10)
    assert command.expires == V.NOW + dt.timedelta(hours=2)
    assert command.payload == payload(body=play_with(volume=70, zones=["loa-cho", "loa-dinh"],
                                                     start_at="2026-11-26T06:00:00Z"))
    body = command.body
    assert isinstance(body, PlayBody)
    assert (body.level, body.start_at) == ("normal", dt.datetime(2026, 11, 26, 6, 0, tzinfo=dt.timezone.utc))
    content = body.content
    assert (content.content_id, content.url, content.sha256, content.length, content.duration, content.codec,
            content.volume, content.zones, content.title) == (
        "ban-tin-sang-2611", "https://district.example/audio/ban-tin-sang-2611.mp3", V.content()["sha256"],
        482113, 120.5, "mp3", 70, ("loa-cho", "loa-dinh"), "Bản tin sáng 26/11")
    assert command.level == "normal" and command.version is None


def test_optional_play_fields_absent_are_none():
    body = play_with(volume=_DROP, zones=_DROP, title=_DROP, start_at=_DROP, url=None)
    content = parse(body=body).body.content
    assert (content.url, content.volume, content.zones, content.title) == (None, None, None, None)
    assert parse(body=body).body.start_at is None


def test_the_issue_time_is_its_own_field():
    command = parse(issued_at="2026-11-26T05:00:00Z")
    assert command.issued_at == dt.datetime(2026, 11, 26, 5, 0, tzinfo=dt.timezone.utc)
    assert command.not_before == V.NOW - dt.timedelta(minutes=10)


@pytest.mark.parametrize("kind", COMMAND_TYPES)
def test_every_command_type_parses_into_its_own_body(kind):
    bodies = {"play": (V.play_body(), PlayBody), "stop": ({"all": True}, StopBody),
              "schedule": (V.schedule_body(5), ScheduleBody), "live": (live_body(), LiveBody),
              "config": ({"version": 8, "settings": {"audio.volume": 70}}, ConfigBody),
              "time": ({"time": "2026-11-26T05:30:00Z"}, TimeBody), "update": (update_body(), UpdateBody)}
    body, cls = bodies[kind]
    command = parse(kind, body)
    assert command.type == kind and isinstance(command.body, cls)


@pytest.mark.parametrize("target", ["27787-03", "c1", "d760", "p123456", "all"])
def test_each_target_form_is_accepted(target):
    assert parse(targets=[target]).targets == (target,)


def test_target_and_id_limits_are_inclusive():
    targets = [f"{10000 + i}-01" for i in range(64)]
    assert parse(targets=targets).targets == tuple(targets)
    assert parse(id="i" * 64).id == "i" * 64
    assert parse(id="i" * 16).id == "i" * 16


def test_expiry_one_second_after_not_before_is_enough():
    assert parse(expires="2026-11-26T05:20:01Z").expires == dt.datetime(2026, 11, 26, 5, 20, 1,
                                                                         tzinfo=dt.timezone.utc)


# -- content items (play body, playlists) -----------------------------------------------------------------

@pytest.mark.parametrize("changes,reason,detail", [
    ({"content_id": _DROP}, "malformed", "body.content_id is missing"),
    ({"codec": _DROP}, "malformed", "body.codec is missing"),
    ({"level": _DROP}, "malformed", "body.level is missing"),
    ({"speed": 2}, "malformed", "body.speed is not a known field"),
    ({"content_id": "bad id"}, "malformed", "body.content_id has an invalid value 'bad id'"),
    ({"content_id": "c" * 65}, "malformed", "body.content_id has an invalid value " + repr("c" * 40)),
    ({"url": "http://district.example/a.mp3"}, "malformed", "body.url must be a https URL"),
    ({"url": "https:/district.example/a.mp3"}, "malformed", "body.url must be a https URL"),
    ({"url": "https://"}, "malformed", "body.url must be a https URL"),
    ({"url": "https://district.example/a b.mp3"}, "malformed", "body.url must be a https URL"),
    ({"url": "https://district.example/a.mp3\n"}, "malformed", "body.url must be a https URL"),
    ({"url": 5}, "malformed", "body.url must be a string"),
    ({"sha256": None}, "malformed", "body.sha256 must be a string"),
    ({"url": "https://d.example/" + "a" * 2031}, "limit_exceeded", "body.url is 2049 characters, limit 2048"),
    ({"sha256": "A" * 64}, "malformed", "body.sha256 has an invalid value " + repr("A" * 40)),
    ({"sha256": "a" * 63}, "malformed", "body.sha256 has an invalid value " + repr("a" * 40)),
    ({"length": 0}, "malformed", "body.length must be between 1 and 209715200"),
    ({"length": 209715201}, "limit_exceeded", "body.length is 209715201 bytes, limit 209715200"),
    ({"length": True}, "malformed", "body.length must be an integer"),
    ({"length": "482113"}, "malformed", "body.length must be an integer"),
    ({"length": 1.5}, "malformed", "body.length must be an integer"),
    ({"duration": 0}, "malformed", "body.duration must be between 0.001 and 14400.0"),
    ({"duration": 0.0009}, "malformed", "body.duration must be between 0.001 and 14400.0"),
    ({"duration": 14400.5}, "limit_exceeded", "body.duration is 14400.5, limit 14400.0"),
    ({"duration": "120"}, "malformed", "body.duration must be a number"),
    ({"duration": False}, "malformed", "body.duration must be a number"),
    ({"codec": "MP3"}, "malformed", "body.codec must be one of mp3, ogg, opus, wav, aac, flac"),
    ({"codec": 3}, "malformed", "body.codec must be one of mp3, ogg, opus, wav, aac, flac"),
    ({"codec": None}, "malformed", "body.codec must be one of mp3, ogg, opus, wav, aac, flac"),
    ({"volume": 101}, "malformed", "body.volume must be between 0 and 100"),
    ({"volume": -1}, "malformed", "body.volume must be between 0 and 100"),
    ({"volume": 50.0}, "malformed", "body.volume must be an integer"),
    ({"volume": True}, "malformed", "body.volume must be an integer"),
    ({"zones": "loa-cho"}, "malformed", "body.zones must be a list"),
    ({"zones": ["z"] * 17}, "limit_exceeded", "body.zones has 17 items, limit 16"),
    ({"zones": ["ok", "bad zone"]}, "malformed", "body.zones[1] has an invalid value 'bad zone'"),
    ({"zones": [1]}, "malformed", "body.zones[0] must be a string"),
    ({"title": 5}, "malformed", "body.title must be a string"),
    ({"title": "t" * 257}, "limit_exceeded", "body.title is 257 characters, limit 256"),
    ({"level": "urgent"}, "malformed", "body.level must be one of normal, priority, emergency"),
    ({"level": None}, "malformed", "body.level must be one of normal, priority, emergency"),
    ({"start_at": "soon"}, "malformed",
     "body.start_at not an RFC 3339 time: 'soon' (want e.g. 2026-11-26T05:30:00Z)"),
    ({"start_at": "2026-11-26T07:30:00Z"}, "malformed", "body.start_at must be before expires"),  # == expires
])
def test_each_play_body_fault_has_its_reason_and_detail(changes, reason, detail):
    assert fault(body=play_with(**changes)) == (reason, detail)


def test_content_limits_are_inclusive():
    at_limits = play_with(length=209715200, duration=14400, volume=100, zones=["z"] * 16, title="t" * 256,
                          url="https://d.example/" + "a" * 2030, start_at="2026-11-26T07:29:59Z")
    content = parse(body=at_limits).body.content
    assert (content.length, content.duration, content.volume, len(content.zones), len(content.title),
            len(content.url)) == (209715200, 14400.0, 100, 16, 256, 2048)
    low = parse(body=play_with(length=1, duration=0.001, volume=0, zones=[])).body.content
    assert (low.length, low.duration, low.volume, low.zones) == (1, 0.001, 0, ())


def test_a_url_may_carry_another_url_in_its_query():
    url = "https://district.example/a.mp3?mirror=https://b.example/a.mp3"
    assert parse(body=play_with(url=url)).body.content.url == url


def test_an_integer_duration_is_read_as_seconds():
    duration = parse(body=play_with(duration=120)).body.content.duration
    assert duration == 120.0 and type(duration) is float


def test_content_limits_follow_the_configured_limits():
    small = Limits(audio_max_bytes=1000, audio_max_duration=60.0, max_string=64, max_url=30, max_zones=1)

    def body(**changes):
        return play_with(**{"content_id": "c1", "length": 1000, "duration": 60, "title": "t" * 64, "zones": ["z"],
                            "url": HTTPS, **changes})

    assert parse(body=body(), limits=small).body.content.length == 1000
    assert fault(body=body(length=1001), limits=small) == ("limit_exceeded", "body.length is 1001 bytes, limit 1000")
    assert fault(body=body(duration=61), limits=small) == ("limit_exceeded", "body.duration is 61, limit 60.0")
    assert fault(body=body(title="t" * 65), limits=small) == (
        "limit_exceeded", "body.title is 65 characters, limit 64")
    assert fault(body=body(zones=["a", "b"]), limits=small) == ("limit_exceeded", "body.zones has 2 items, limit 1")
    assert fault(body=body(url=HTTPS + "x"), limits=small) == (
        "limit_exceeded", "body.url is 31 characters, limit 30")


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_is_accepted(codec):
    assert parse(body=play_with(codec=codec)).body.content.codec == codec


@pytest.mark.parametrize("level", LEVELS)
def test_every_level_is_accepted_for_play(level):
    assert parse(body=play_with(level=level)).body.level == level


# -- stop ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body,expected", [
    ({"content_id": "ban-tin-sang-2611"}, ("ban-tin-sang-2611", None, False)),
    ({"level": "emergency"}, (None, "emergency", False)),
    ({"all": True}, (None, None, True)),
    ({"content_id": None, "level": None, "all": True}, (None, None, True)),
    ({"content_id": "x", "level": None, "all": False}, ("x", None, False)),
])
def test_stop_names_exactly_one_thing(body, expected):
    stop = parse("stop", body).body
    assert (stop.content_id, stop.level, stop.all) == expected
    assert parse("stop", body).level == expected[1]


@pytest.mark.parametrize("body,detail", [
    ({}, "body needs exactly one of content_id, level or all"),
    ({"all": False}, "body needs exactly one of content_id, level or all"),
    ({"content_id": "x", "all": True}, "body needs exactly one of content_id, level or all"),
    ({"content_id": "x", "level": "normal"}, "body needs exactly one of content_id, level or all"),
    ({"level": "normal", "all": True}, "body needs exactly one of content_id, level or all"),
    ({"all": 1}, "body.all must be true or false"),
    ({"all": None}, "body.all must be true or false"),
    ({"level": "all"}, "body.level must be one of normal, priority, emergency"),
    ({"content_id": "a b"}, "body.content_id has an invalid value 'a b'"),
    ({"zone": "x"}, "body.zone is not a known field"),
    ([], "body must be an object"),
])
def test_each_stop_fault_is_malformed_with_its_detail(body, detail):
    assert fault("stop", body) == ("malformed", detail)


# -- schedule -------------------------------------------------------------------------------------------------

def test_a_schedule_keeps_every_slot_and_once_field():
    body = parse("schedule", V.schedule_body(5)).body
    assert (body.version, body.timezone) == (5, "Asia/Ho_Chi_Minh")
    first, live = body.slots
    assert (first.id, first.weekdays, first.start, first.duration, first.level, first.volume, first.live) == (
        "sang", (1, 2, 3, 4, 5, 6, 7), "05:30", 1800.0, "normal", 80, None)
    assert [item.content_id for item in first.playlist] == ["ban-tin-sang-2611"]
    assert (live.id, live.weekdays, live.start, live.duration, live.volume, live.playlist) == (
        "chieu", (1, 3, 5), "17:00", 3600.0, None, None)
    assert (live.live.url, live.live.codec) == ("https://radio.example/vov1", "mp3")
    (once,) = body.once
    assert (once.id, once.at, once.duration, once.level, once.volume, once.live) == (
        "hop-dan", dt.datetime(2026, 11, 28, 19, 0, tzinfo=dt.timezone.utc), 600.0, "priority", None, None)
    assert [item.content_id for item in once.playlist] == ["hop-dan-2811"]
    assert parse("schedule", V.schedule_body(5)).version == 5
    assert parse("schedule", V.schedule_body(5)).level is None


def test_a_schedule_without_once_items_and_a_live_source_without_codec():
    body = V.schedule_body(5)
    del body["once"]
    body["slots"][1]["live"] = {"url": "https://radio.example/vov1"}
    schedule = parse("schedule", body).body
    assert schedule.once == () and schedule.slots[1].live.codec is None


@pytest.mark.parametrize("body,reason,detail", [
    (schedule_with(version=_DROP), "malformed", "body.version is missing"),
    (schedule_with(timezone=_DROP), "malformed", "body.timezone is missing"),
    (schedule_with(slots=_DROP), "malformed", "body.slots is missing"),
    (schedule_with(extra=[]), "malformed", "body.extra is not a known field"),
    (schedule_with(version=0), "malformed", "body.version must be between 1 and 9007199254740992"),
    (schedule_with(version=None), "malformed", "body.version must be an integer"),
    (schedule_with(version=2**53 + 1), "malformed", "body.version must be between 1 and 9007199254740992"),
    (schedule_with(timezone="Asia/Ho Chi Minh"), "malformed",
     "body.timezone has an invalid value 'Asia/Ho Chi Minh'"),
    (schedule_with(timezone="A" * 65), "limit_exceeded", "body.timezone is 65 characters, limit 64"),
    (schedule_with(slots={}), "malformed", "body.slots must be a list"),
    (schedule_with(slots=[V.schedule_body(5)["slots"][0]] * 65), "limit_exceeded",
     "body.slots has 65 items, limit 64"),
    (schedule_with(slots=["sang"]), "malformed", "body.slots[0] must be an object"),
    (schedule_with(slot={"id": _DROP}), "malformed", "body.slots[0].id is missing"),
    (schedule_with(slot={"weekdays": _DROP}), "malformed", "body.slots[0].weekdays is missing"),
    (schedule_with(slot={"start": _DROP}), "malformed", "body.slots[0].start is missing"),
    (schedule_with(slot={"duration": _DROP}), "malformed", "body.slots[0].duration is missing"),
    (schedule_with(slot={"level": _DROP}), "malformed", "body.slots[0].level is missing"),
    (schedule_with(slot={"at": "2026-11-28T19:00:00Z"}), "malformed", "body.slots[0].at is not a known field"),
    (schedule_with(slot={"id": "a b"}), "malformed", "body.slots[0].id has an invalid value 'a b'"),
    (schedule_with(slot={"weekdays": []}), "malformed", "body.slots[0].weekdays must not be empty"),
    (schedule_with(slot={"weekdays": [1] * 8}), "limit_exceeded", "body.slots[0].weekdays has 8 items, limit 7"),
    (schedule_with(slot={"weekdays": [1, 0]}), "malformed", "body.slots[0].weekdays[1] must be between 1 and 7"),
    (schedule_with(slot={"weekdays": [8]}), "malformed", "body.slots[0].weekdays[0] must be between 1 and 7"),
    (schedule_with(slot={"weekdays": ["mon"]}), "malformed", "body.slots[0].weekdays[0] must be an integer"),
    (schedule_with(slot={"weekdays": [None]}), "malformed", "body.slots[0].weekdays[0] must be an integer"),
    (schedule_with(slot={"start": "24:00"}), "malformed", "body.slots[0].start has an invalid value '24:00'"),
    (schedule_with(slot={"start": "5:30"}), "malformed", "body.slots[0].start has an invalid value '5:30'"),
    (schedule_with(slot={"duration": 0.5}), "malformed", "body.slots[0].duration must be between 1 and 86400.0"),
    (schedule_with(slot={"duration": 86401}), "malformed",
     "body.slots[0].duration must be between 1 and 86400.0"),
    (schedule_with(slot={"level": "emergency"}), "malformed", "body.slots[0].level must be one of normal, priority"),
    (schedule_with(slot={"volume": 101}), "malformed", "body.slots[0].volume must be between 0 and 100"),
    (schedule_with(slot={"playlist": _DROP}), "malformed", "body.slots[0] needs exactly one of playlist or live"),
    (schedule_with(slot={"live": {"url": "https://radio.example/x"}}), "malformed",
     "body.slots[0] needs exactly one of playlist or live"),
    (schedule_with(slot={"playlist": []}), "malformed", "body.slots[0].playlist must not be empty"),
    (schedule_with(slot={"playlist": {}}), "malformed", "body.slots[0].playlist must be a list"),
    (schedule_with(slot={"playlist": [V.content(url=None)] * 101}), "limit_exceeded",
     "body.slots[0].playlist has 101 items, limit 100"),
    (schedule_with(slot={"playlist": [V.content(url=None), V.content(codec="midi")]}), "malformed",
     "body.slots[0].playlist[1].codec must be one of mp3, ogg, opus, wav, aac, flac"),
    (schedule_with(slot={"playlist": [V.play_body()]}), "malformed",
     "body.slots[0].playlist[0].level is not a known field"),
    (schedule_with(slot={"playlist": _DROP, "live": "https://radio.example/x"}), "malformed",
     "body.slots[0].live must be an object"),
    (schedule_with(slot={"playlist": _DROP, "live": {}}), "malformed", "body.slots[0].live.url is missing"),
    (schedule_with(slot={"playlist": _DROP, "live": {"url": "https://r.example/x", "gain": 2}}), "malformed",
     "body.slots[0].live.gain is not a known field"),
    (schedule_with(slot={"playlist": _DROP, "live": {"url": "ftp://r.example/x"}}), "malformed",
     "body.slots[0].live.url must be a http or https URL"),
    (schedule_with(slot={"playlist": _DROP, "live": {"url": "https://r.example/x", "codec": "midi"}}), "malformed",
     "body.slots[0].live.codec must be one of mp3, ogg, opus, wav, aac, flac"),
    (schedule_with(once={"at": _DROP}), "malformed", "body.once[0].at is missing"),
    (schedule_with(once={"id": _DROP}), "malformed", "body.once[0].id is missing"),
    (schedule_with(once={"duration": _DROP}), "malformed", "body.once[0].duration is missing"),
    (schedule_with(once={"level": _DROP}), "malformed", "body.once[0].level is missing"),
    (schedule_with(once={"weekdays": [1]}), "malformed", "body.once[0].weekdays is not a known field"),
    (schedule_with(once={"id": "a b"}), "malformed", "body.once[0].id has an invalid value 'a b'"),
    (schedule_with(once={"at": None}), "malformed", "body.once[0].at time must be a string"),
    (schedule_with(once={"at": "2026-11-28"}), "malformed",
     "body.once[0].at not an RFC 3339 time: '2026-11-28' (want e.g. 2026-11-26T05:30:00Z)"),
    (schedule_with(once={"duration": 0}), "malformed", "body.once[0].duration must be between 1 and 86400.0"),
    (schedule_with(once={"duration": 86400.5}), "malformed",
     "body.once[0].duration must be between 1 and 86400.0"),
    (schedule_with(once={"level": "emergency"}), "malformed", "body.once[0].level must be one of normal, priority"),
    (schedule_with(once={"volume": -1}), "malformed", "body.once[0].volume must be between 0 and 100"),
    (schedule_with(once={"live": {"url": "https://r.example/x"}}), "malformed",
     "body.once[0] needs exactly one of playlist or live"),
    (schedule_with(once={"playlist": _DROP, "live": {"url": "http://r.example/x"}}), "live_url_refused",
     "body.once[0].live.url must be an https URL, not http://r.example/x"),
    (schedule_with(once={"playlist": [V.content(sha256="0")]}), "malformed",
     "body.once[0].playlist[0].sha256 has an invalid value '0'"),
])
def test_each_schedule_fault_has_its_reason_and_detail(body, reason, detail):
    assert fault("schedule", body) == (reason, detail)


def schedule_with_once(items):
    return {**V.schedule_body(5), "once": items}


@pytest.mark.parametrize("items,reason,detail", [
    ([[]], "malformed", "body.once[0] must be an object"),
    ([{"id": "x"}] * 257, "limit_exceeded", "body.once has 257 items, limit 256"),
    ("soon", "malformed", "body.once must be a list"),
])
def test_each_once_list_fault_has_its_reason_and_detail(items, reason, detail):
    assert fault("schedule", schedule_with_once(items)) == (reason, detail)


def test_schedule_limits_are_inclusive():
    slot = V.schedule_body(5)["slots"][0]
    once = V.schedule_body(5)["once"][0]
    body = {**V.schedule_body(2**53), "timezone": "A" * 64,
            "slots": [{**slot, "weekdays": [1, 2, 3, 4, 5, 6, 7], "duration": 86400,
                       "playlist": [V.content(url=None)] * 100, "volume": 0}] * 64,
            "once": [{**once, "duration": 1, "volume": 100}] * 256}
    schedule = parse("schedule", body).body
    assert (schedule.version, len(schedule.timezone), len(schedule.slots), len(schedule.once)) == (
        2**53, 64, 64, 256)
    assert (schedule.slots[0].duration, len(schedule.slots[0].playlist), schedule.slots[0].volume) == (
        86400.0, 100, 0)
    assert (schedule.once[0].duration, schedule.once[0].volume) == (1.0, 100)
    low = parse("schedule", {**V.schedule_body(1), "slots": [{**slot, "duration": 1, "weekdays": [7]}],
                             "once": []}).body
    assert (low.version, low.slots[0].duration, low.slots[0].weekdays) == (1, 1.0, (7,))


def test_schedule_counts_follow_the_configured_limits():
    small = Limits(max_slots=1, max_once=1, max_playlist=1)
    body = V.schedule_body(5)
    assert fault("schedule", body, small) == ("limit_exceeded", "body.slots has 2 items, limit 1")
    body["slots"] = body["slots"][:1]
    assert len(parse("schedule", body, small).body.slots) == 1
    body["once"] = body["once"] * 2
    assert fault("schedule", body, small) == ("limit_exceeded", "body.once has 2 items, limit 1")
    body["once"] = body["once"][:1]
    body["slots"][0]["playlist"] = body["slots"][0]["playlist"] * 2
    assert fault("schedule", body, small) == ("limit_exceeded", "body.slots[0].playlist has 2 items, limit 1")


@pytest.mark.parametrize("timezone", ["UTC", "Asia/Ho_Chi_Minh", "America/Argentina/Buenos_Aires", "Etc/GMT+7"])
def test_timezone_names_are_accepted(timezone):
    assert parse("schedule", schedule_with(timezone=timezone)).body.timezone == timezone


@pytest.mark.parametrize("start", ["00:00", "23:59", "19:05", "09:59"])
def test_slot_start_times_at_the_edges_of_the_day_are_accepted(start):
    assert parse("schedule", schedule_with(slot={"start": start})).body.slots[0].start == start


def test_a_schedule_slot_and_once_item_may_use_a_priority_level_and_a_live_source():
    body = schedule_with(slot={"level": "priority"},
                         once={"playlist": _DROP, "live": {"url": "https://r.example/x", "codec": "ogg"}})
    schedule = parse("schedule", body).body
    assert schedule.slots[0].level == "priority"
    assert (schedule.once[0].playlist, schedule.once[0].live.url, schedule.once[0].live.codec) == (
        None, "https://r.example/x", "ogg")


# -- live -------------------------------------------------------------------------------------------------

def test_a_live_command_keeps_its_fields_and_default_grace():
    body = parse("live", live_body(volume=60)).body
    assert (body.url, body.max_duration, body.level, body.volume, body.grace) == (
        "https://radio.example/vov1", 1800.0, "normal", 60, 30.0)
    assert parse("live", live_body(grace=0)).body.grace == 0.0
    assert parse("live", live_body(grace=600, max_duration=43200)).body.grace == 600.0
    assert parse("live", live_body(max_duration=1)).body.max_duration == 1.0
    assert parse("live", live_body(level="emergency")).level == "emergency"


@pytest.mark.parametrize("body,reason,detail", [
    (live_body(url=_DROP), "malformed", "body.url is missing"),
    (live_body(url=None), "malformed", "body.url must be a string"),
    (live_body(max_duration=_DROP), "malformed", "body.max_duration is missing"),
    (live_body(level=_DROP), "malformed", "body.level is missing"),
    (live_body(codec="mp3"), "malformed", "body.codec is not a known field"),
    (live_body(url="http://radio.example/" + "x" * 80), "live_url_refused",
     "body.url must be an https URL, not " + ("http://radio.example/" + "x" * 80)[:64]),
    (live_body(url="rtsp://radio.example/x"), "malformed", "body.url must be a http or https URL"),
    (live_body(max_duration=43201), "limit_exceeded", "body.max_duration is 43201, limit 43200.0"),
    (live_body(max_duration=0.5), "malformed", "body.max_duration must be between 1 and 43200.0"),
    (live_body(level="loud"), "malformed", "body.level must be one of normal, priority, emergency"),
    (live_body(volume=101), "malformed", "body.volume must be between 0 and 100"),
    (live_body(grace=601), "malformed", "body.grace must be between 0 and 600"),
    (live_body(grace=-1), "malformed", "body.grace must be between 0 and 600"),
    (live_body(grace=None), "malformed", "body.grace must be a number"),
])
def test_each_live_fault_has_its_reason_and_detail(body, reason, detail):
    assert fault("live", body) == (reason, detail)


def test_live_duration_cap_follows_the_configured_limit():
    assert fault("live", live_body(max_duration=61), Limits(live_max_duration=60)) == (
        "limit_exceeded", "body.max_duration is 61, limit 60")
    assert parse("live", live_body(max_duration=60), Limits(live_max_duration=60)).body.max_duration == 60.0


# -- config -----------------------------------------------------------------------------------------------

def test_a_config_keeps_its_settings_read_only():
    settings = {"audio.volume": 70, "audio.gain": 1.5, "relays.enabled": True, "audio.name": "x",
                "audio.list": ["a", 1, 2.5, False], "audio.reset": None}
    body = parse("config", {"version": 8, "settings": settings}).body
    assert body.version == 8 and dict(body.settings) == settings
    with pytest.raises(TypeError):
        body.settings["audio.volume"] = 1  # type: ignore[index]
    assert parse("config", {"version": 8, "settings": settings}).level is None


@pytest.mark.parametrize("body,reason,detail", [
    ({"version": 8}, "malformed", "body.settings is missing"),
    ({"settings": {}}, "malformed", "body.version is missing"),
    ({"version": 8, "settings": {}, "x": 1}, "malformed", "body.x is not a known field"),
    ({"version": 8, "settings": []}, "malformed", "body.settings must be an object"),
    ({"version": 0, "settings": {}}, "malformed", "body.version must be between 1 and 9007199254740992"),
    ({"version": 8, "settings": {f"a.k{i}": 1 for i in range(65)}}, "limit_exceeded",
     "body.settings has 65 entries, limit 64"),
    ({"version": 8, "settings": {"Audio.Volume": 1}}, "malformed",
     "body.settings key has an invalid value 'Audio.Volume'"),
    ({"version": 8, "settings": {"a" * 129: 1}}, "limit_exceeded", "body.settings key is 129 characters, limit 128"),
    ({"version": 8, "settings": {"audio.name": "n" * 257}}, "limit_exceeded",
     "body.settings.audio.name is 257 characters, limit 256"),
    ({"version": 8, "settings": {"audio.list": [1] * 33}}, "limit_exceeded",
     "body.settings.audio.list has 33 items, limit 32"),
    ({"version": 8, "settings": {"audio.list": [1, {"a": 1}]}}, "malformed",
     "body.settings.audio.list[1] must be a scalar"),
    ({"version": 8, "settings": {"audio.list": [None]}}, "malformed", "body.settings.audio.list[0] must be a scalar"),
    ({"version": 8, "settings": {"audio.list": ["ok", "n" * 257]}}, "limit_exceeded",
     "body.settings.audio.list[1] is 257 characters, limit 256"),
    ({"version": 8, "settings": {"audio.map": {"a": 1}}}, "malformed",
     "body.settings.audio.map must be a scalar or a list of scalars"),
])
def test_each_config_fault_has_its_reason_and_detail(body, reason, detail):
    assert fault("config", body) == (reason, detail)


def test_config_limits_are_inclusive():
    settings = {f"a.k{i}": 1 for i in range(62)}
    settings["a" * 128] = ["n" * 256] * 32
    settings["a.s"] = "n" * 256
    assert len(parse("config", {"version": 2**53, "settings": settings}).body.settings) == 64
    assert fault("config", {"version": 8, "settings": {"a.k1": 1, "a.k2": 2}}, Limits(max_settings=1)) == (
        "limit_exceeded", "body.settings has 2 entries, limit 1")


# -- time and update --------------------------------------------------------------------------------------

def test_a_time_beacon_keeps_its_time():
    assert parse("time", {"time": "2026-11-26T12:30:00+07:00"}).body.time == V.NOW


@pytest.mark.parametrize("body,detail", [
    ({}, "body.time is missing"),
    ({"time": "2026-11-26T05:30:00Z", "tz": "UTC"}, "body.tz is not a known field"),
    ({"time": 1764135000}, "body.time time must be a string"),
])
def test_each_time_beacon_fault_is_malformed_with_its_detail(body, detail):
    assert fault("time", body) == ("malformed", detail)


def test_an_update_keeps_its_release_bytes_and_rollout():
    body = parse("update", update_body(release="Ấp", rollout={"percent": 100, "salt": "wave-1"})).body
    assert (body.release, body.files_url, body.rollout_percent, body.rollout_salt) == (
        "Ấp".encode(), "https://district.example/releases/1.2.0/", 100, "wave-1")
    plain = parse("update", update_body()).body
    assert (plain.rollout_percent, plain.rollout_salt) == (None, None)
    assert parse("update", update_body(rollout={"percent": 1, "salt": "s"})).body.rollout_percent == 1
    assert len(parse("update", update_body(release="r" * 32768)).body.release) == 32768
    assert parse("update", update_body(rollout=None)).body.rollout_percent is None


@pytest.mark.parametrize("body,reason,detail", [
    (update_body(release=_DROP), "malformed", "body.release is missing"),
    (update_body(files_url=_DROP), "malformed", "body.files_url is missing"),
    (update_body(reboot=True), "malformed", "body.reboot is not a known field"),
    (update_body(release=5), "malformed", "body.release must be a string"),
    (update_body(files_url=None), "malformed", "body.files_url must be a string"),
    (update_body(release="r" * 32769), "limit_exceeded", "body.release is 32769 characters, limit 32768"),
    (update_body(files_url="http://district.example/r/"), "malformed", "body.files_url must be a https URL"),
    (update_body(rollout=[]), "malformed", "body.rollout must be an object"),
    (update_body(rollout={"percent": 5}), "malformed", "body.rollout.salt is missing"),
    (update_body(rollout={"salt": "s"}), "malformed", "body.rollout.percent is missing"),
    (update_body(rollout={"percent": 0, "salt": "s"}), "malformed", "body.rollout.percent must be between 1 and 100"),
    (update_body(rollout={"percent": 101, "salt": "s"}), "malformed",
     "body.rollout.percent must be between 1 and 100"),
    (update_body(rollout={"percent": 5, "salt": "a b"}), "malformed", "body.rollout.salt has an invalid value 'a b'"),
])
def test_each_update_fault_has_its_reason_and_detail(body, reason, detail):
    assert fault("update", body) == (reason, detail)


def test_the_default_limits_are_the_documented_ones():
    # docs/protocol.md §4 quotes these; a change here is an interface change.
    limits = Limits()
    assert (limits.max_targets, limits.max_string, limits.max_url, limits.max_zones, limits.max_playlist,
            limits.max_slots, limits.max_once, limits.max_settings) == (64, 256, 2048, 16, 100, 64, 256, 64)
    assert (limits.audio_max_bytes, limits.audio_max_duration, limits.live_max_duration, limits.skew_seconds) == (
        200 * 1024 * 1024, 14400.0, 43200.0, 30.0)
    assert dict(limits.max_validity) == {"play": 31 * 86400.0, "stop": 86400.0, "live": 86400.0, "time": 3600.0,
                                         "schedule": 400 * 86400.0, "config": 400 * 86400.0,
                                         "update": 31 * 86400.0}
    assert limits == copy.copy(limits) and hash(limits) == hash(Limits())
