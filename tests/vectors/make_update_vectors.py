"""Generate tests/vectors/updates/vectors.json: signed releases, update commands, install decisions and rollout
buckets (docs/protocol.md, "Software updates"). Self-contained: its own trust document and keys.

    .venv/bin/python tests/vectors/make_update_vectors.py          # rewrite the file
    .venv/bin/python tests/vectors/make_update_vectors.py --check  # exit 1 if it is stale

THE SEEDS ARE PUBLIC: never use these keys outside tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from node.trust import keys as ed25519  # noqa: E402
from node.trust.envelope import PAYLOAD_COMMAND, PAYLOAD_RELEASE, PAYLOAD_TRUST, encode_envelope, pae  # noqa: E402

NOW = "2026-12-01T12:00:00Z"
NODE_ID = "27787-03"
ROLES = {"root": None, "release-a": ["release"], "release-b": ["release"], "release-c": ["release"],
         "bulletin": ["bulletin"]}


def key(name):
    return ed25519.from_seed(hashlib.sha256(b"speaker-node public update vector key: " + name.encode()).digest())


def keyid(name):
    return ed25519.keyid_of_key(key(name))


def encode(body):
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def sign(payload_type, body, names):
    payload = encode(body)
    message = pae(payload_type, payload)
    return encode_envelope(payload_type, payload, [(keyid(n), key(n).sign(message)) for n in names]).decode()


def trust():
    keys = {keyid(n): {"name": n, "public": ed25519.public_b64(key(n)), "roles": roles}
            for n, roles in ROLES.items() if roles}
    body = {"v": 1, "type": "trust", "version": 1, "issued_at": "2026-01-01T00:00:00Z",
            "expires": "2027-12-31T00:00:00Z",
            "root": {"keys": {keyid("root"): {"public": ed25519.public_b64(key("root"))}}, "threshold": 1},
            "keys": keys, "thresholds": {"release": 2}, "revoked": [keyid("release-c")]}
    return sign(PAYLOAD_TRUST, body, ["root"])


WHEELS = [{"name": "speaker_node-0.2.0-py3-none-any.whl", "sha256": hashlib.sha256(b"w1").hexdigest(),
           "length": 201311},
          {"name": "paho_mqtt-2.1.0-py3-none-any.whl", "sha256": hashlib.sha256(b"w2").hexdigest(),
           "length": 67188}]


def release_body(**over):
    body = {"v": 1, "type": "release", "version": "0.2.0", "min_version": "0.1.0", "package": "speaker-node",
            "architectures": ["arm64", "armhf"], "python": ["3.11", "3.13"], "files": WHEELS,
            "issued_at": "2026-12-01T00:00:00Z", "expires": "2027-03-01T00:00:00Z"}
    body.update(over)
    return body


def update_command(release_envelope: str, signers, cid):
    body = {"v": 1, "type": "update", "id": cid, "issued_at": "2026-12-01T11:00:00Z",
            "not_before": "2026-12-01T11:00:00Z", "expires": "2026-12-08T11:00:00Z", "targets": [NODE_ID],
            "body": {"release": release_envelope, "files_url": "https://district.example/releases/0.2.0/",
                     "rollout": {"percent": 20, "salt": "speaker-node-0.2.0"}}}
    return sign(PAYLOAD_COMMAND, body, signers)


def build() -> dict:
    good = sign(PAYLOAD_RELEASE, release_body(), ["release-a", "release-b"])
    releases = [
        ("two distinct release keys", good, None),
        ("one release key", sign(PAYLOAD_RELEASE, release_body(), ["release-a"]), "threshold_not_met"),
        ("the same key twice", sign(PAYLOAD_RELEASE, release_body(), ["release-a", "release-a"]),
         "threshold_not_met"),
        ("a release key and a bulletin key", sign(PAYLOAD_RELEASE, release_body(), ["release-a", "bulletin"]),
         "threshold_not_met"),
        ("a revoked release key does not count", sign(PAYLOAD_RELEASE, release_body(),
                                                      ["release-a", "release-c"]), "threshold_not_met"),
        ("expired", sign(PAYLOAD_RELEASE, release_body(expires="2026-12-01T11:59:59Z"),
                         ["release-a", "release-b"]), "expired"),
        ("unknown field", sign(PAYLOAD_RELEASE, release_body(url="x"), ["release-a", "release-b"]), "malformed"),
        ("a file name with a path", sign(PAYLOAD_RELEASE, release_body(
            files=[{**WHEELS[0], "name": "../x.whl"}]), ["release-a", "release-b"]), "malformed"),
    ]
    commands = [
        ("update signed by two release keys, release valid", update_command(good, ["release-a", "release-b"],
                                                                            "upd-0001-aaaaaaaaaaaa"),
         "accepted", None),
        ("update signed by one release key", update_command(good, ["release-a"], "upd-0002-aaaaaaaaaaaa"),
         "rejected", "threshold_not_met"),
        ("update signed by a bulletin key", update_command(good, ["bulletin"], "upd-0003-aaaaaaaaaaaa"),
         "rejected", "role_not_allowed"),
        ("update carrying a singly signed release", update_command(releases[1][1], ["release-a", "release-b"],
                                                                   "upd-0004-aaaaaaaaaaaa"),
         "rejected", "threshold_not_met"),
    ]
    decisions = [
        {"running": "0.1.0", "arch": "arm64", "python": "3.11", "release": {}, "install": True, "reason": None},
        {"running": "0.2.0", "arch": "arm64", "python": "3.11", "release": {}, "install": False,
         "reason": "already_running"},
        {"running": "0.3.0", "arch": "arm64", "python": "3.11", "release": {}, "install": False,
         "reason": "rollback"},
        {"running": "0.3.0", "arch": "arm64", "python": "3.11", "release": {"downgrade": True}, "install": True,
         "reason": None},
        {"running": "0.0.9", "arch": "arm64", "python": "3.11", "release": {}, "install": False,
         "reason": "min_version"},
        {"running": "0.1.0", "arch": "x86_64", "python": "3.11", "release": {}, "install": False,
         "reason": "platform"},
        {"running": "0.1.0", "arch": "armhf", "python": "3.12", "release": {}, "install": False,
         "reason": "platform"},
        {"running": "0.9.0", "arch": "arm64", "python": "3.11", "release": {"version": "0.10.0"},
         "install": True, "reason": None},
    ]
    from node.update.release import in_rollout
    nodes = [f"27787-{i:02d}" for i in range(1, 13)]
    rollout = [{"node": n, "percent": 20, "salt": "speaker-node-0.2.0",
                "bucket": int.from_bytes(hashlib.sha256(f"speaker-node-0.2.0:{n}".encode()).digest()[:8], "big")
                % 100, "in": in_rollout(n, 20, "speaker-node-0.2.0")} for n in nodes]
    return {
        "description": "docs/protocol.md 'Software updates'. Load `trust` as the node's trust document; verify "
                       "each release at `now`; verify each command on the node's own topic at `now` with no "
                       "seen ids; decide each install with the good release's body plus the overrides; "
                       "bucket = first 8 bytes of SHA-256('SALT:NODE') as a big-endian integer, mod 100.",
        "now": NOW, "node_id": NODE_ID, "trust": trust(),
        "keys": {n: {"seed": hashlib.sha256(b"speaker-node public update vector key: " + n.encode()).hexdigest(),
                     "keyid": keyid(n), "roles": r} for n, r in ROLES.items()},
        "releases": [{"description": d, "envelope": e, "expected_reason": r} for d, e, r in releases],
        "commands": [{"description": d, "envelope": e, "expected": {"decision": dec, "reason": r}}
                     for d, e, dec, r in commands],
        "decisions": decisions,
        "rollout": rollout,
        "release_body_b64": base64.b64encode(encode(release_body())).decode(),
    }


def render() -> str:
    return json.dumps(build(), ensure_ascii=False, indent=1) + "\n"


if __name__ == "__main__":
    path = HERE / "updates" / "vectors.json"
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if path.exists() and path.read_text(encoding="utf-8") == text else 1)
    path.write_text(text, encoding="utf-8")
