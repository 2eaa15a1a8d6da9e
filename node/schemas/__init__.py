"""JSON Schemas (draft 2020-12) for every message the node publishes.

The daemon does not validate at runtime (it builds these messages itself); tests and district tools do.
`validate` needs the optional `jsonschema` package (a dev dependency).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

NAMES = ("status", "delta", "event", "play_record")
BASE_URI = "https://schemas.speaker-node.invalid/"


class SchemaValidationError(ValueError):
    """The object does not match the schema; `problems` lists every mismatch, not only the first."""

    def __init__(self, name: str, problems: list[str]):
        self.name, self.problems = name, problems
        super().__init__(f"{name}: " + "; ".join(problems))


def _file_name(name: str) -> str:
    stem = name.removesuffix(".json")
    if stem not in NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(NAMES)}")
    return stem + ".json"


@cache
def load_schema(name: str) -> dict:
    """The parsed schema, e.g. load_schema("status") or load_schema("status.json")."""
    return json.loads(resources.files(__name__).joinpath(_file_name(name)).read_text(encoding="utf-8"))


@cache
def _validator(name: str):
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (BASE_URI + _file_name(other), Resource.from_contents(load_schema(other))) for other in NAMES
    )
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def errors(name: str, obj) -> list[str]:
    """Every mismatch as "path: message" (empty when valid)."""
    found = []
    for error in sorted(_validator(name).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        where = "/".join(str(part) for part in error.absolute_path) or "(top)"
        found.append(f"{where}: {error.message}")
        for sub in error.context or ():  # oneOf (status): say why each variant did not fit
            sub_where = "/".join(str(part) for part in sub.absolute_path) or "(top)"
            found.append(f"  {sub_where}: {sub.message}")
    return found


def validate(name: str, obj) -> None:
    problems = errors(name, obj)
    if problems:
        raise SchemaValidationError(name, problems)


def schema_for(payload: dict) -> str:
    """Which schema an events-topic payload belongs to (by its `kind`)."""
    return "play_record" if payload.get("kind") == "play" else "event"
