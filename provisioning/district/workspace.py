"""`speaker-district init DIR`: a district workspace (signing keys, trust.json, TLS CA) - and loading it.

Layout (docs/architecture.md): district.toml, trust.json, keys/NAME.{key,pub}, tls/..., nodes/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from node.trust import keys as ed25519
from node.trust.envelope import strict_json
from node.trust.trustdoc import TrustDocument, load_trust_file
from provisioning import pki
from provisioning.district import signing

# Signing keys made by init, and the roles the first trust document gives them.
KEY_ROLES = {
    "bulletin": ["bulletin"],
    "emergency-a": ["emergency"],
    "emergency-b": ["emergency"],
    "schedule": ["schedule", "config"],
    "live": ["live"],
    # Software releases need two of these (node/update/release.py): keep them on different people's
    # machines, as with the emergency keys.
    "release-a": ["release"],
    "release-b": ["release"],
    # The online keys of `speaker-district serve`, the only private keys on the always-online district
    # server (`speaker-district serve-dir`): each holds one role that can move no relay.
    "time": ["time"],         # signs time answers to node nonces (docs/protocol.md §7a)
    "collector": ["ack"],     # signs acknowledgements of stored records (node/trust/ack.py)
}
# Roles an online key may hold. A key with any other role (or a root key, or the TLS CA key) is offline:
# `serve-dir` never exports it and `serve` refuses to run where it finds one (provisioning/district/serve_dir.py).
ONLINE_ROLES = frozenset({"time", "ack"})
SERVE_IDENTITY = "district-serve"   # TLS client certificate CN of `serve` (provisioning/broker/acl.template)
EMERGENCY_THRESHOLD = 2
RELEASE_THRESHOLD = 2
KEY_LIFETIME_DAYS = 3 * 365  # longer than a trust document: keys outlive yearly trust refreshes


class WorkspaceError(Exception):
    """The workspace is missing, incomplete, or would be overwritten."""


_atomic_write = pki.atomic_write  # the name sign_audio.py imports from here


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _write_key(directory: Path, name: str, key) -> None:
    pki.write_private_key(directory / "keys" / f"{name}.key", key)
    pki.atomic_write(directory / "keys" / f"{name}.pub", ed25519.public_pem(key))


@dataclass
class Workspace:
    directory: Path
    config: dict
    trust: TrustDocument

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Workspace:
        directory = Path(directory)
        try:
            config = tomllib.loads((directory / "district.toml").read_text(encoding="utf-8"))
            trust = load_trust_file(directory / "trust.json")
        except FileNotFoundError as exc:
            raise WorkspaceError(f"{directory} is not a district workspace ({exc.filename} missing); "
                                 f"run 'speaker-district init {directory}'") from None
        except tomllib.TOMLDecodeError as exc:
            raise WorkspaceError(f"{directory / 'district.toml'}: {exc}") from None
        return cls(directory, config, trust)

    @property
    def topic_prefix(self) -> str:
        return self.config.get("topic_prefix", "spk")

    @property
    def broker(self) -> str:
        return self.config.get("broker", "127.0.0.1:8883")

    @property
    def brokers(self) -> list[str]:
        """Every broker of the district (`brokers = [...]` in district.toml, else the one `broker`):
        nodes fail over between them, so the collector reads them all."""
        listed = self.config.get("brokers")
        return list(listed) if listed else [self.broker]

    def key(self, name: str):
        path = self.directory / "keys" / f"{name}.key"
        try:
            return ed25519.load_private_pem(path.read_bytes())
        except FileNotFoundError:
            raise WorkspaceError(f"signing key {path} is missing") from None

    def root_keys(self) -> list:
        """Every root private key present (root-1, root-2, ...) that the current trust document lists."""
        found = []
        for path in sorted((self.directory / "keys").glob("root-*.key")):
            key = ed25519.load_private_pem(path.read_bytes())
            if ed25519.keyid_of_key(key) in self.trust.root_keys:
                found.append(key)
        return found

    def signing_keys(self, command: dict) -> list:
        return [self.key(name) for name in signing.signer_names(command)]

    def topic_for(self, target: str) -> str:
        kind = "group" if (target == "all" or target[:1] in "cdp") else "node"
        return f"{self.topic_prefix}/{kind}/{target}/cmd"


def init_workspace(
    directory: str | os.PathLike, *, district: str = "district", broker_hosts: list[str] = (),
    root_keys: int = 1, root_threshold: int = 1, trust_days: int = 365, force: bool = False,
    now: dt.datetime | None = None,
) -> Workspace:
    directory = Path(directory)
    if not 1 <= root_threshold <= root_keys:
        raise WorkspaceError("--root-threshold must be between 1 and --root-keys")
    existing = [p for p in ("district.toml", "trust.json", "keys", "tls") if (directory / p).exists()]
    if existing and not force:
        raise WorkspaceError(f"{directory} already holds a workspace ({', '.join(existing)}); "
                             "use --force to replace it (old keys become useless to nodes)")
    now = now or signing.now_utc()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "keys").mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory / "keys", 0o700)
    (directory / "nodes").mkdir(exist_ok=True)
    if force:
        for stale in (directory / "keys").glob("root-*.key"):
            stale.unlink()

    roots = [ed25519.generate() for _ in range(root_keys)]
    for index, key in enumerate(roots, 1):
        _write_key(directory, f"root-{index}", key)
    entries = {}
    for name, roles in KEY_ROLES.items():
        key = ed25519.generate()
        _write_key(directory, name, key)
        keyid, entry = signing.trust_key_entry(name, key, roles, now - dt.timedelta(minutes=5),
                                               now + dt.timedelta(days=KEY_LIFETIME_DAYS))
        entries[keyid] = entry
    body = signing.build_trust_body(
        version=1, issued_at=now, expires=now + dt.timedelta(days=trust_days), root_keys=roots,
        root_threshold=root_threshold, keys=entries,
        thresholds={"emergency": EMERGENCY_THRESHOLD, "release": RELEASE_THRESHOLD})
    pki.atomic_write(directory / "trust.json", signing.sign_trust(body, roots[:root_threshold]))

    hosts = ["localhost", "127.0.0.1", "::1"]
    hosts += [h for h in dict.fromkeys(broker_hosts) if h not in hosts]
    tls = directory / "tls"
    ca_key, ca_cert = pki.create_ca(f"{district} district CA")
    pki.write_private_key(tls / "ca.key", ca_key)
    pki.write_cert(tls / "ca.crt", ca_cert)
    broker_key, broker_cert = pki.issue_server_cert(ca_key, ca_cert, hosts)
    pki.write_private_key(tls / "broker.key", broker_key)
    pki.write_cert(tls / "broker.crt", broker_cert)
    # "district" sends commands and reads everything; "district-serve" is the always-online service's
    # (time answers, record acks; no command topic); "monitor" is the read-only identity for dashboards
    # (Telegraf, Node-RED, speaker-district watch): the shipped ACL knows all three.
    for identity in ("district", SERVE_IDENTITY, "monitor"):
        client_key, client_cert = pki.issue_client_cert(ca_key, ca_cert, identity)
        pki.write_private_key(tls / f"{identity}.key", client_key)
        pki.write_cert(tls / f"{identity}.crt", client_cert)
    pki.write_crl(tls / "crl.pem", pki.build_crl(ca_key, ca_cert, []))

    # The address nodes are given by `speaker-provision node new`: the first --broker-host. Without
    # one, the district tools on this machine use loopback and `node new` asks for --broker.
    broker = f"{broker_hosts[0]}:8883" if broker_hosts else "127.0.0.1:8883"
    toml = (f"# speaker-district workspace\ndistrict = {_toml_string(district)}\n"
            f"broker = {_toml_string(broker)}\ntopic_prefix = \"spk\"\n"
            f"broker_hosts = [{', '.join(_toml_string(h) for h in hosts)}]\n")
    pki.atomic_write(directory / "district.toml", toml.encode("utf-8"))
    return Workspace.load(directory)


def bump_trust(
    directory: str | os.PathLike, revoke: list[str] = (), add_keys: dict[str, list[str]] | None = None,
    emergency_threshold: int | None = None, trust_days: int | None = None, now: dt.datetime | None = None,
    drop_roles: dict[str, list[str]] | None = None,
) -> bytes:
    """Next trust version: revoke keys (keyid or name), add new keys {name: roles}, take roles away from
    existing keys {name: roles} (the key stays, e.g. `schedule` losing `time` to the new online `time` key),
    change the emergency threshold. Re-signed by the root keys in the workspace, written to DIR/trust.json;
    returns its bytes."""
    workspace = Workspace.load(directory)
    current = workspace.trust
    body = strict_json(current.payload, "trust.json")
    now = now or signing.now_utc()
    revoked = set(body.get("revoked", []))
    for item in revoke:
        key = current.keys.get(item) or current.key_named(item)
        if key is None:
            raise WorkspaceError(f"no key {item!r} in trust version {current.version}")
        revoked.add(key.keyid)
    for name, roles in (add_keys or {}).items():
        if current.key_named(name) is not None and current.key_named(name).keyid not in revoked:
            raise WorkspaceError(f"key {name!r} already exists; revoke it first")
        key = ed25519.generate()
        _write_key(workspace.directory, name, key)
        keyid, entry = signing.trust_key_entry(name, key, roles, now - dt.timedelta(minutes=5),
                                               now + dt.timedelta(days=KEY_LIFETIME_DAYS))
        body["keys"] = {k: v for k, v in body["keys"].items() if v["name"] != name} | {keyid: entry}
        revoked.discard(keyid)
    for name, roles in (drop_roles or {}).items():
        key = current.key_named(name)
        if key is None or key.keyid in revoked:
            raise WorkspaceError(f"no key {name!r} in trust version {current.version}")
        missing = sorted(set(roles) - key.roles)
        if missing:
            raise WorkspaceError(f"key {name!r} does not hold {', '.join(missing)}")
        left = [r for r in body["keys"][key.keyid]["roles"] if r not in roles]
        if not left:
            raise WorkspaceError(f"key {name!r} would hold no role; revoke it instead")
        body["keys"][key.keyid] = dict(body["keys"][key.keyid], roles=left)
    thresholds = dict(body.get("thresholds", {}))
    if emergency_threshold is not None:
        thresholds["emergency"] = emergency_threshold
    span = current.expires - current.issued_at
    body.update(version=current.version + 1, issued_at=signing.format_time(now),
                expires=signing.format_time(now + (dt.timedelta(days=trust_days) if trust_days else span)),
                thresholds=thresholds, revoked=sorted(revoked))
    roots = workspace.root_keys()
    if len(roots) < current.root_threshold:
        raise WorkspaceError(f"only {len(roots)} root key(s) in {directory}/keys; "
                             f"{current.root_threshold} needed")
    envelope = signing.sign_trust(body, roots)
    load_trust_file(envelope)  # refuse to write a document no node would accept
    pki.atomic_write(workspace.directory / "trust.json", envelope)
    return envelope


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="speaker-district init",
        description="Create a district workspace: signing keys, trust.json, TLS CA.")
    parser.add_argument("directory")
    parser.add_argument("--district", default="district", help="district name (shown in certificates)")
    parser.add_argument("--broker-host", action="append", default=[],
                        help="extra DNS name or IP for the broker certificate (repeatable)")
    parser.add_argument("--root-keys", type=int, default=1, help="number of root keys (default 1)")
    parser.add_argument("--root-threshold", type=int, default=1, help="root signatures needed (default 1)")
    parser.add_argument("--trust-days", type=int, default=365, help="trust document lifetime (default 365)")
    parser.add_argument("--force", action="store_true", help="replace an existing workspace")
    args = parser.parse_args(argv)
    try:
        workspace = init_workspace(args.directory, district=args.district, broker_hosts=args.broker_host,
                                   root_keys=args.root_keys, root_threshold=args.root_threshold,
                                   trust_days=args.trust_days, force=args.force)
    except (WorkspaceError, OSError) as exc:
        print(f"speaker-district init: error: {exc}", file=sys.stderr)
        return 1
    trust = workspace.trust
    print(f"workspace {workspace.directory}: trust version {trust.version}, {len(trust.keys)} signing keys, "
          f"root {trust.root_threshold}-of-{len(trust.root_keys)}, "
          f"expires {signing.format_time(trust.expires)}")
    return 0
