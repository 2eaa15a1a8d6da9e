"""`speaker-district serve-dir WORKSPACE OUT`: the online-only directory `speaker-district serve` runs from.

The district workspace (`speaker-district init`) holds every private key of the district: root keys,
the emergency, bulletin, schedule, live and release keys, and the TLS CA key. `serve` is the one part
that is always online (it answers time requests and collects records), so its machine is the one an
intruder reaches first. It needs none of those keys. This command writes a directory holding only what
`serve` uses:

    OUT/district.toml            broker address(es), topic prefix (copied)
    OUT/trust.json               the signed trust document: public keys only
    OUT/tls/ca.crt               the district CA certificate (to check the broker), not its key
    OUT/tls/district-serve.{crt,key}  the service's own TLS client identity (CN district-serve: the ACL
                                 lets it answer time, read reports and write acks, never a command)
    OUT/keys/time.{key,pub}      the online keys: every key of the trust document whose roles are all
    OUT/keys/collector.{key,pub}   online roles (workspace.ONLINE_ROLES: time, ack), none revoked
    OUT/serve-dir.json           what was exported, from which trust version (not secret)

Run it again after every trust change (a new trust.json, a rotated online key): it rewrites those files,
removes online keys that are no longer exported and keeps everything else in OUT (the collector's
records.db). `serve` checks every file of its directory for private keys (`offline_keys`) and refuses to
start when it finds an offline one (docs/architecture.md "The online service directory").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.errors import RemoteDataError
from node.trust import keys as ed25519
from node.trust.trustdoc import TrustDocument, load_trust_file
from provisioning import pki
from provisioning.district import signing
from provisioning.district.workspace import ONLINE_ROLES, SERVE_IDENTITY, Workspace, WorkspaceError

MANIFEST = "serve-dir.json"
TLS_IDENTITY = SERVE_IDENTITY   # the client certificate serve's duties connect with (localbroker.client_tls)
_PEM_PRIVATE = re.compile(rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)
_SCAN_LIMIT = 1 << 20           # key files are small; databases and logs beside them are not read whole
# The collector's default store (records_store.RecordStore.open: DIR/records.db) holds what nodes sent:
# a node could put any PEM text in an event, and serve must not refuse to start because of it.
STATE_FILES = frozenset({"records.db", "records.db-wal", "records.db-shm", "records.db-journal"})


@dataclass(frozen=True)
class OfflineKey:
    path: Path
    why: str


def _classify(key, trust: TrustDocument, ca_public: bytes | None, own_public: bytes | None) -> str | None:
    """Why this private key must not be online, or None when `serve` may hold it."""
    if isinstance(key, Ed25519PrivateKey):
        keyid = ed25519.keyid_of_key(key)
        if keyid in trust.root_keys:
            return f"root key {keyid[:12]}… (signs trust documents)"
        entry = trust.keys.get(keyid)
        if entry is None:
            return f"signing key {keyid[:12]}… not in trust version {trust.version} (retired or foreign)"
        extra = sorted(entry.roles - ONLINE_ROLES)
        if extra:
            return f"signing key {entry.name!r} (offline roles: {', '.join(extra)})"
        return None
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    if public == ca_public:
        return "the district TLS CA key (issues node and broker certificates)"
    if public == own_public:
        return None  # the service's own TLS client key (tls/district-serve.key)
    return (f"a TLS key that is not serve's own tls/{TLS_IDENTITY}.crt "
            "(the district tools', a node's, the broker's, a dashboard's)")


def _cert_public(path: Path) -> bytes | None:
    try:
        cert = pki.load_cert(path)
    except (OSError, ValueError):
        return None
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def offline_keys(directory: str | os.PathLike, trust: TrustDocument | None = None) -> list[OfflineKey]:
    """Every private key in any file under DIRECTORY that `serve` must not hold: root keys, signing keys
    with a role outside ONLINE_ROLES, keys the trust document does not know, the TLS CA key, any TLS key
    but the service's own, and private keys that cannot be read (encrypted or damaged: nobody can say they
    are harmless). Files are judged by content, not by name, except the collector's database (STATE_FILES:
    node-supplied text)."""
    directory = Path(directory)
    trust = trust or Workspace.load(directory).trust
    ca_public = _cert_public(directory / "tls" / "ca.crt")
    own_public = _cert_public(directory / "tls" / f"{TLS_IDENTITY}.crt")
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.parent == directory and path.name in STATE_FILES:
            continue
        try:
            if path.stat().st_size > _SCAN_LIMIT:
                continue
            data = path.read_bytes()
        except OSError as exc:
            found.append(OfflineKey(path, f"unreadable ({exc.strerror}); cannot tell whether it holds a key"))
            continue
        for block in _PEM_PRIVATE.finditer(data):
            try:
                key = serialization.load_pem_private_key(block.group(0), password=None)
            except (ValueError, TypeError):
                found.append(OfflineKey(path, "a private key that cannot be read (encrypted or damaged)"))
                continue
            why = _classify(key, trust, ca_public, own_public)
            if why:
                found.append(OfflineKey(path, why))
    return found


def tls_identity(directory: str | os.PathLike) -> str:
    """The broker identity `serve` connects as from DIRECTORY: the serve-dir's own (serve-dir.json), or
    "district" in a full workspace (development, --allow-offline-keys)."""
    try:
        return json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))["tls_identity"]
    except (OSError, ValueError, KeyError, TypeError):
        return "district"


def _ensure_serve_certificate(workspace: Workspace) -> None:
    """A workspace made before the district-serve identity gets its certificate now (the CA key is here,
    offline). The broker learns the identity's ACL from `speaker-district broker-config` (run it again)."""
    tls = workspace.directory / "tls"
    if (tls / f"{TLS_IDENTITY}.crt").exists() and (tls / f"{TLS_IDENTITY}.key").exists():
        return
    ca_key, ca_cert = pki.load_private_key(tls / "ca.key"), pki.load_cert(tls / "ca.crt")
    key, cert = pki.issue_client_cert(ca_key, ca_cert, TLS_IDENTITY)
    pki.write_private_key(tls / f"{TLS_IDENTITY}.key", key)
    pki.write_cert(tls / f"{TLS_IDENTITY}.crt", cert)


def online_keys(workspace: Workspace) -> dict[str, Ed25519PrivateKey]:
    """{name: key} of the workspace's signing keys that may go online: listed in trust, not revoked,
    every role an online one."""
    trust = workspace.trust
    chosen = {}
    for path in sorted((workspace.directory / "keys").glob("*.key")):
        key = ed25519.load_private_pem(path.read_bytes())
        entry = trust.keys.get(ed25519.keyid_of_key(key))
        if entry is None or entry.keyid in trust.revoked or not entry.roles or entry.roles - ONLINE_ROLES:
            continue
        chosen[path.stem] = key
    return chosen


def export_serve_dir(workspace_dir: str | os.PathLike, out: str | os.PathLike,
                     now: dt.datetime | None = None) -> dict:
    """Write (or refresh) OUT from the workspace; returns the manifest written to OUT/serve-dir.json."""
    workspace = Workspace.load(workspace_dir)
    out = Path(out)
    if out.resolve() == workspace.directory.resolve():
        raise WorkspaceError("OUT must be another directory than the workspace")
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).exists():
            raise WorkspaceError(f"{out} is not empty and is not a serve directory ({MANIFEST} missing)")
        # judged by the trust document of the previous export: the online key it held may be retired now
        previous = load_trust_file(out / "trust.json") if (out / "trust.json").exists() else workspace.trust
        replaced = {out / "tls" / "district.key"}   # an export from before district-serve: removed below
        present = [k for k in offline_keys(out, previous) if k.path not in replaced]
        if present:
            raise WorkspaceError(f"{out} holds offline keys ({present[0].path}: {present[0].why}); "
                                 "it is not a serve directory")
    keys = online_keys(workspace)
    if not any("time" in workspace.trust.keys[ed25519.keyid_of_key(k)].roles for k in keys.values()):
        raise WorkspaceError(
            f"{workspace.directory} has no key that holds only the time role (a workspace from before issue 9); "
            f"first run 'speaker-district send {workspace.directory} trust --add-key time:time "
            "--drop-role schedule:time' (docs/architecture.md)")
    _ensure_serve_certificate(workspace)
    tls = workspace.directory / "tls"
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    (out / "keys").mkdir(mode=0o700, exist_ok=True)
    os.chmod(out / "keys", 0o700)
    pki.atomic_write(out / "district.toml", (workspace.directory / "district.toml").read_bytes())
    pki.atomic_write(out / "trust.json", (workspace.directory / "trust.json").read_bytes())
    pki.atomic_write(out / "tls" / "ca.crt", (tls / "ca.crt").read_bytes())
    pki.atomic_write(out / "tls" / f"{TLS_IDENTITY}.crt", (tls / f"{TLS_IDENTITY}.crt").read_bytes())
    pki.atomic_write(out / "tls" / f"{TLS_IDENTITY}.key", (tls / f"{TLS_IDENTITY}.key").read_bytes(), 0o600)
    for stale in ("district.crt", "district.key"):   # an export from before the district-serve identity
        (out / "tls" / stale).unlink(missing_ok=True)
    os.chmod(out / "tls", 0o700)
    for name, key in keys.items():
        pki.write_private_key(out / "keys" / f"{name}.key", key)
        pki.atomic_write(out / "keys" / f"{name}.pub", ed25519.public_pem(key))
    for stale in (out / "keys").iterdir():   # a rotated or revoked online key does not stay online
        if stale.suffix in (".key", ".pub") and stale.stem not in keys:
            stale.unlink()
    manifest = {"v": 1, "workspace": str(workspace.directory.resolve()), "trust_version": workspace.trust.version,
                "exported_at": signing.format_time(now or signing.now_utc()),
                "keys": {name: ed25519.keyid_of_key(key) for name, key in keys.items()},
                "tls_identity": TLS_IDENTITY}
    pki.atomic_write(out / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    left = offline_keys(out, workspace.trust)
    if left:  # cannot happen by construction; checked because a mistake here is the whole attack
        raise WorkspaceError(f"export wrote an offline key: {left[0].path}: {left[0].why}")
    return manifest


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="speaker-district serve-dir",
        description="Write the online-only directory `speaker-district serve` runs from: district.toml, "
                    "trust.json, the CA certificate, the district-serve TLS client certificate and key, and only the "
                    "online signing keys (time, collector). No root, emergency, bulletin, schedule, live or "
                    "release key, no CA key. Run it again after every trust change.")
    parser.add_argument("workspace", help="the district workspace (speaker-district init), kept offline")
    parser.add_argument("out", help="the directory to write (e.g. copied to the server's /var/lib/speaker-district)")
    args = parser.parse_args(argv)
    try:
        manifest = export_serve_dir(args.workspace, args.out)
    except (WorkspaceError, RemoteDataError, OSError, ValueError) as exc:
        print(f"speaker-district serve-dir: error: {exc}", file=sys.stderr)
        return 1
    keys = ", ".join(f"{name} ({keyid[:12]}…)" for name, keyid in manifest["keys"].items())
    print(f"{args.out}: trust version {manifest['trust_version']}, online keys {keys}; "
          f"run 'speaker-district serve {args.out}'")
    return 0
