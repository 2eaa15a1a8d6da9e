"""Node TLS certificates in a district workspace: issue, list, revoke, export the CRL.

The registry (DIR/nodes/registry.json) is the district's memory of every certificate it ever issued,
so a revoked or superseded serial stays in the CRL forever. Each node also gets a small folder
DIR/nodes/ID/ (cert.pem, serial, issued, fingerprint) that a person can read without tools.

The CRL is what Mosquitto checks (`crlfile`); it carries a nextUpdate date and OpenSSL refuses *every*
client once that date has passed, so re-export it (`speaker-district crl`) well before CRL_DAYS run out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.errors import ConfigError
from provisioning import pki
from provisioning.nodeid import parse_node_id

CRL_DAYS = 365
# The district's own client identities (DIR/tls/NAME.{crt,key}, issued by `speaker-district init`): the
# district tools, the always-online service (`serve` from a serve-dir: no command topic), and the
# read-only dashboards.
DISTRICT_IDENTITIES = ("district", "district-serve", "monitor")
REASONS = ("unspecified", "keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged")


@dataclass(frozen=True)
class IssuedCert:
    node_id: str
    serial: int
    fingerprint: str
    cert: x509.Certificate
    cert_path: Path


class Workspace:
    """A district workspace as far as node certificates are concerned."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.ca_key_path = self.root / "tls" / "ca.key"
        self.ca_cert_path = self.root / "tls" / "ca.crt"
        self.crl_path = self.root / "tls" / "crl.pem"
        self.nodes_dir = self.root / "nodes"
        self.registry_path = self.nodes_dir / "registry.json"
        missing = [p for p in (self.ca_key_path, self.ca_cert_path) if not p.is_file()]
        if missing:
            raise ConfigError(
                [
                    f"{self.root} is not a district workspace: missing {', '.join(str(p) for p in missing)} "
                    f"(create one with 'speaker-district init {self.root}')"
                ]
            )

    def ca(self):
        return pki.load_private_key(self.ca_key_path), pki.load_cert(self.ca_cert_path)

    @contextmanager
    def locked(self):
        """Serialise registry updates: two technicians on one laptop must not lose a serial."""
        self.nodes_dir.mkdir(parents=True, exist_ok=True)
        with open(self.nodes_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load_registry(self) -> dict:
        if not self.registry_path.exists():
            return {"version": 1, "nodes": {}}
        try:
            data = json.loads(self.registry_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError([f"{self.registry_path} is not valid JSON: {exc}"]) from exc
        data.setdefault("nodes", {})
        return data

    def save_registry(self, registry: dict) -> None:
        text = json.dumps(registry, indent=2, sort_keys=True) + "\n"
        pki.atomic_write(self.registry_path, text.encode(), 0o644)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def active_entry(entries: list[dict]) -> dict | None:
    for entry in reversed(entries):
        if not entry.get("revoked_at"):
            return entry
    return None


def write_crl(ws: Workspace, registry: dict) -> x509.CertificateRevocationList:
    revoked = [
        (int(e["serial"], 16), _parse_iso(e["revoked_at"]))
        for section in ("nodes", "identities")
        for entries in registry.get(section, {}).values()
        for e in entries
        if e.get("revoked_at")
    ]
    ca_key, ca_cert = ws.ca()
    crl = pki.build_crl(ca_key, ca_cert, revoked, days=CRL_DAYS)
    pki.write_crl(ws.crl_path, crl)
    return crl


def issue_node_cert(workspace: str | Path, node_id: str, public_key, *, replace: bool = False,
                    groups: list[str] | None = None) -> IssuedCert:
    """Certify `public_key` for `node_id` and record it. With `replace`, the node's current
    certificate is revoked as superseded (a new SD card for the same pole); without it, refuse.
    `groups` (c<commune>, d<district>, p<province>) go into the registry: the broker ACL that
    `speaker-district broker-config` writes lets the node read exactly those groups' commands."""
    commune, _ = parse_node_id(node_id)
    groups = sorted(set(groups or []) | {f"c{commune}"})
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        raise ConfigError(["node keys must be ECDSA P-256 (the broker and node TLS stacks expect it)"])
    ws = Workspace(workspace)
    with ws.locked():
        registry = ws.load_registry()
        entries = registry["nodes"].setdefault(node_id, [])
        for entry in entries:
            if entry.get("public_key_sha256") == _key_digest(public_key):
                raise ConfigError(
                    [
                        f"this public key was already certified for {node_id} "
                        f"(serial {entry['serial']}); generate a new key"
                    ]
                )
        current = active_entry(entries)
        if current and not replace:
            raise ConfigError(
                [
                    f"node {node_id} already has an active certificate (serial {current['serial']}); "
                    "revoke it first or pass --replace"
                ]
            )
        ca_key, ca_cert = ws.ca()
        _, cert = pki.issue_client_cert(ca_key, ca_cert, node_id, public_key=public_key)
        now = dt.datetime.now(dt.timezone.utc)
        if current:
            current["revoked_at"] = _iso(now)
            current["reason"] = "superseded"
        fp = pki.fingerprint(cert)
        serial_hex = f"{cert.serial_number:X}"
        entries.append(
            {
                "serial": serial_hex,
                "fingerprint": fp,
                "issued": _iso(now),
                "not_after": _iso(cert.not_valid_after_utc),
                "public_key_sha256": _key_digest(public_key),
                "revoked_at": None,
                "reason": None,
                "groups": groups,
            }
        )
        node_dir = ws.nodes_dir / node_id
        if current:
            old = node_dir / "cert.pem"
            if old.exists():
                (node_dir / "old").mkdir(exist_ok=True)
                old.replace(node_dir / "old" / f"{current['serial']}.pem")
        pki.write_cert(node_dir / "cert.pem", cert)
        for name, value in (("serial", serial_hex), ("issued", _iso(now)), ("fingerprint", fp)):
            pki.atomic_write(node_dir / name, (value + "\n").encode(), 0o644)
        ws.save_registry(registry)
        if current:
            write_crl(ws, registry)
    return IssuedCert(node_id, cert.serial_number, fp, cert, node_dir / "cert.pem")


def _key_digest(public_key) -> str:
    import hashlib

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def revoke_node(workspace: str | Path, node_id: str, reason: str = "unspecified") -> list[str]:
    """Revoke every active certificate of `node_id`, rewrite the CRL; returns the revoked serials."""
    if reason not in REASONS:
        raise ConfigError([f"reason must be one of {', '.join(REASONS)}, got {reason!r}"])
    ws = Workspace(workspace)
    with ws.locked():
        registry = ws.load_registry()
        entries = registry["nodes"].get(node_id)
        if not entries:
            raise ConfigError([f"no certificate was ever issued to {node_id} in {ws.root}"])
        now = _iso(dt.datetime.now(dt.timezone.utc))
        serials = []
        for entry in entries:
            if not entry.get("revoked_at"):
                entry["revoked_at"] = now
                entry["reason"] = reason
                serials.append(entry["serial"])
        ws.save_registry(registry)
        write_crl(ws, registry)
    return serials


def revoke_identity(workspace: str | Path, name: str, reason: str = "unspecified", *,
                    reissue: bool = False) -> tuple[str, str | None]:
    """Revoke the current certificate of a district identity (DIR/tls/NAME.crt) and rewrite the CRL; with
    `reissue`, first put a new key and certificate for NAME in its place (the old certificate moves to
    DIR/tls/old/, the old key is deleted). Returns (revoked serial, new serial or None).
    A broker from `broker-config` closes the revoked certificate's open connections within seconds."""
    if name not in DISTRICT_IDENTITIES:
        raise ConfigError([f"identity must be one of {', '.join(DISTRICT_IDENTITIES)} (nodes: --node), got {name!r}"])
    if reason not in REASONS:
        raise ConfigError([f"reason must be one of {', '.join(REASONS)}, got {reason!r}"])
    ws = Workspace(workspace)
    tls = ws.root / "tls"
    cert_path, key_path = tls / f"{name}.crt", tls / f"{name}.key"
    with ws.locked():
        if not cert_path.exists():
            raise ConfigError([f"{cert_path} does not exist: no certificate was issued to {name} here"])
        registry = ws.load_registry()
        cert = pki.load_cert(cert_path)
        serial = f"{cert.serial_number:X}"
        entries = registry.setdefault("identities", {}).setdefault(name, [])
        if not any(e["serial"] == serial for e in entries):
            entries.append({"serial": serial, "fingerprint": pki.fingerprint(cert),
                            "revoked_at": _iso(dt.datetime.now(dt.timezone.utc)), "reason": reason})
        new_serial = None
        if reissue:
            (tls / "old").mkdir(exist_ok=True)
            cert_path.replace(tls / "old" / f"{name}-{serial}.crt")
            key_path.unlink(missing_ok=True)
            ca_key, ca_cert = ws.ca()
            key, new_cert = pki.issue_client_cert(ca_key, ca_cert, name)
            pki.write_private_key(key_path, key)
            pki.write_cert(cert_path, new_cert)
            new_serial = f"{new_cert.serial_number:X}"
        ws.save_registry(registry)
        write_crl(ws, registry)
    return serial, new_serial


def list_certs(workspace: str | Path, now: dt.datetime | None = None) -> list[dict]:
    ws = Workspace(workspace)
    now = now or dt.datetime.now(dt.timezone.utc)
    rows = []
    for node_id, entries in sorted(ws.load_registry()["nodes"].items()):
        for entry in entries:
            if entry.get("revoked_at"):
                status = "revoked" if entry.get("reason") != "superseded" else "superseded"
            elif _parse_iso(entry["not_after"]) < now:
                status = "expired"
            else:
                status = "active"
            rows.append(
                {
                    "node": node_id,
                    "status": status,
                    **{k: v for k, v in entry.items() if k != "public_key_sha256"},
                }
            )
    return rows


def _fail(prog: str, exc: Exception) -> int:
    problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
    for problem in problems:
        print(f"{prog}: {problem}", file=sys.stderr)
    return 2


def _load_csr_key(path: Path):
    try:
        csr = x509.load_pem_x509_csr(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError([f"cannot read CSR {path}: {exc}"]) from exc
    if not csr.is_signature_valid:
        raise ConfigError([f"CSR {path} has an invalid signature (not made by the key it carries)"])
    return csr.public_key()


def main_issue_cert(argv: list[str]) -> int:
    prog = "speaker-district issue-cert"
    parser = argparse.ArgumentParser(prog=prog, description="Issue a node TLS client certificate.")
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--node", required=True, help="node id, e.g. 27787-03")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csr", type=Path, help="certify the key in this PEM CSR (key made on the node)")
    source.add_argument("--out-dir", type=Path, help="generate a new key here: node.key, node.crt, ca.crt")
    parser.add_argument(
        "--replace", action="store_true", help="supersede (revoke) the node's current certificate"
    )
    parser.add_argument("--groups", default="", help="the node's groups for the broker ACL, e.g. d760,p75 "
                        "(its commune group is always included)")
    args = parser.parse_args(argv)
    try:
        key = None
        if args.csr:
            public_key = _load_csr_key(args.csr)
        else:
            if (args.out_dir / "node.key").exists():
                raise ConfigError(
                    [f"{args.out_dir / 'node.key'} exists; a key is never reused or overwritten"]
                )
            key = pki.new_ec_key()
            public_key = key.public_key()
        groups = [g.strip() for g in args.groups.split(",") if g.strip()]
        issued = issue_node_cert(args.workspace, args.node, public_key, replace=args.replace, groups=groups)
        if key is not None:
            args.out_dir.mkdir(parents=True, exist_ok=True)
            pki.write_private_key(args.out_dir / "node.key", key)
            pki.write_cert(args.out_dir / "node.crt", issued.cert)
            pki.write_cert(args.out_dir / "ca.crt", Workspace(args.workspace).ca()[1])
    except (ConfigError, OSError) as exc:
        return _fail(prog, exc)
    print(f"{issued.node_id} serial {issued.serial:X}")
    print(f"fingerprint {issued.fingerprint}")
    print(f"certificate {issued.cert_path}")
    return 0


def main_list_certs(argv: list[str]) -> int:
    prog = "speaker-district list-certs"
    parser = argparse.ArgumentParser(prog=prog, description="List issued node certificates.")
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        rows = list_certs(args.workspace)
    except (ConfigError, OSError) as exc:
        return _fail(prog, exc)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'node':<10} {'status':<11} {'serial':<40} {'not after':<21} fingerprint")
    for row in rows:
        print(
            f"{row['node']:<10} {row['status']:<11} {row['serial']:<40} {row['not_after']:<21} "
            f"{row['fingerprint']}"
        )
    return 0


def main_revoke(argv: list[str]) -> int:
    prog = "speaker-district revoke"
    parser = argparse.ArgumentParser(
        prog=prog, description="Revoke a node's (or a district identity's) certificate and rewrite the CRL."
    )
    parser.add_argument("workspace", type=Path)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--node")
    who.add_argument("--identity", choices=DISTRICT_IDENTITIES,
                     help="the district's own client certificate (DIR/tls/NAME.crt), e.g. a stolen dashboard's")
    parser.add_argument("--reissue", action="store_true",
                        help="with --identity: write a new key and certificate for it first")
    parser.add_argument("--reason", default="unspecified", choices=REASONS)
    args = parser.parse_args(argv)
    if args.reissue and not args.identity:
        parser.error("--reissue goes with --identity (a node gets a new card: issue-cert --replace)")
    try:
        if args.identity:
            serial, new_serial = revoke_identity(args.workspace, args.identity, args.reason, reissue=args.reissue)
            print(f"revoked {args.identity}: serial {serial}")
            if new_serial:
                print(f"new certificate {args.workspace / 'tls' / (args.identity + '.crt')}: serial {new_serial}")
        else:
            serials = revoke_node(args.workspace, args.node, args.reason)
            print(f"revoked {args.node}: serial {', '.join(serials)}" if serials
                  else f"{args.node} had no active certificate; CRL rewritten")
    except (ConfigError, OSError) as exc:
        return _fail(prog, exc)
    print(f"CRL {Workspace(args.workspace).crl_path} rewritten: a broker from 'speaker-district broker-config' that "
          "reads this file closes the revoked connections within seconds; a broker elsewhere: copy it there")
    return 0


def main_crl(argv: list[str]) -> int:
    prog = "speaker-district crl"
    parser = argparse.ArgumentParser(prog=prog, description="Export a fresh CRL (PEM) for the broker.")
    parser.add_argument("workspace", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="write here instead of standard output")
    args = parser.parse_args(argv)
    try:
        ws = Workspace(args.workspace)
        with ws.locked():
            crl = write_crl(ws, ws.load_registry())
    except (ConfigError, OSError) as exc:
        return _fail(prog, exc)
    pem = crl.public_bytes(serialization.Encoding.PEM)
    if args.output:
        pki.atomic_write(args.output, pem, 0o644)
        print(f"CRL written to {args.output} (valid until {_iso(crl.next_update_utc)})", file=sys.stderr)
    else:
        sys.stdout.write(pem.decode())
    return 0


def main(argv: list[str]) -> int:
    print("use issue-cert, list-certs, revoke or crl", file=sys.stderr)
    return 2
