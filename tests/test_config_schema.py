"""node/data/node.example.toml documents every key of the schema with its default, and nothing else;
the sections are frozen dataclasses generated from the schema."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest

from node.config import REQUIRED, SCHEMA, SECTION_CLASSES, PinSpec, load_config, validate

EXAMPLE = Path(__file__).resolve().parent.parent / "node" / "data" / "node.example.toml"
SECTION = re.compile(r"^\s*\[(\w+)\]\s*(#.*)?$")
KEY_LINE = re.compile(r"^(\w+)\s*=")


def documented_keys(text: str) -> dict[tuple[str, str], tuple[object, str]]:
    """(section, key) -> (TOML value, its first line) for `key = value` and commented-out `# key = value`."""
    parsed = tomllib.loads(text)
    found, section = {}, None
    for line in text.splitlines():
        if m := SECTION.match(line):
            section = m.group(1)
            continue
        body = line.strip()
        commented = body.startswith("#")
        if commented:
            body = body.lstrip("#").strip()
        if section is None or not (m := KEY_LINE.match(body)):
            continue
        key = m.group(1)
        if commented:
            try:
                value = tomllib.loads(body)[key]
            except tomllib.TOMLDecodeError:
                continue  # prose that happens to contain '=', not a key
        else:
            value = parsed[section][key]
        found.setdefault((section, key), (value, line))
    return found


def as_toml(value) -> str:
    if value is None:
        return "none"  # an optional pin: not fitted unless the file says so
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)


def test_example_documents_every_schema_key_with_its_default():
    documented = documented_keys(EXAMPLE.read_text(encoding="utf-8"))
    missing, wrong = [], []
    for section, fields in SCHEMA.items():
        for key, spec in fields.items():
            if (section, key) not in documented:
                if spec.default is REQUIRED:
                    missing.append(f"  [{section}]  {key} = ...   # required{': ' + spec.doc if spec.doc else ''}")
                else:
                    missing.append(f"  [{section}]  # {key} = {as_toml(spec.default)}"
                                   f"   # default{': ' + spec.doc if spec.doc else ''}")
                continue
            value, line = documented[(section, key)]
            if spec.default is REQUIRED:
                continue
            if spec.convert(value) != spec.default and "default" not in line:
                wrong.append(f"  [{section}] {key}: the example says {as_toml(value)}, the default is "
                             f"{as_toml(spec.default)}: add '# default: {as_toml(spec.default)}' to the line, "
                             f"or write the default")
    assert not missing, ("node/data/node.example.toml lacks these schema keys; add each line (commented "
                         "out with '# ' if the default should stay in force):\n" + "\n".join(missing))
    assert not wrong, "node/data/node.example.toml:\n" + "\n".join(wrong)


def test_example_names_no_key_the_schema_does_not_know():
    unknown = [f"[{s}] {k}" for s, k in documented_keys(EXAMPLE.read_text(encoding="utf-8"))
               if s not in SCHEMA or k not in SCHEMA[s]]
    assert unknown == [], f"node/data/node.example.toml documents keys the schema lacks: {unknown}"


def test_example_loads_and_its_commented_lines_load_too(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8")
    load_config(EXAMPLE)
    uncommented = "\n".join(re.sub(r"^#\s*(\w+\s*=)", r"\1", line) for line in text.splitlines())
    copy = tmp_path / "node.toml"
    copy.write_text(uncommented, encoding="utf-8")
    load_config(copy)  # every documented value is valid for its key


def test_sections_are_frozen_dataclasses_generated_from_the_schema():
    cfg = load_config(EXAMPLE)
    for section, fields in SCHEMA.items():
        value = getattr(cfg, section)
        assert type(value) is SECTION_CLASSES[section]
        assert [f.name for f in dataclasses.fields(value)] == list(fields)
    assert isinstance(cfg.relays.amplifier, PinSpec)
    assert {f.name: f.type for f in dataclasses.fields(cfg.broker)}["keepalive"] is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.relays.warmup = 0.0


def test_a_validated_remote_setting_is_the_one_change_after_start_up():
    cfg = load_config(EXAMPLE)
    services_view = cfg  # the running services share this object
    cfg.apply_validated("relays.warmup", 4.0)
    assert services_view.relays.warmup == 4.0 and cfg.relays.tail == 1.0


def test_derived_paths_follow_state_dir():
    cfg = validate({"node": {"id": "27787-03"}, "broker": {"servers": ["b.example.vn:8883"]},
                    "storage": {"state_dir": "/srv/n"}})
    assert (cfg.storage.cache_dir, cfg.storage.runtime_dir, cfg.audio.wav_dir) == (
        "/srv/n/cache", "/run/speaker-node", "/srv/n/wav")
