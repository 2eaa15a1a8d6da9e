"""`speaker-provision node new`: one node's key, certificate, trust document and node.toml.

The private key is generated here, for this node only, written 0600 and never reused: the registry
refuses a public key it has certified before, and an existing node folder is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tomllib
from pathlib import Path

from node.brokeraddr import loopback_problem
from node.errors import ConfigError
from provisioning import pki
from provisioning.district.certs import Workspace, issue_node_cert
from provisioning.i18n import msg
from provisioning.nodeid import NodeIdentity, make_identity

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"
ETC = "/etc/speaker-node"
NODE_FILES = ("node.key", "node.crt", "ca.crt", "trust.json", "node.toml")


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def render_node_toml(
    identity: NodeIdentity, servers: list[str], topic_prefix: str = "spk", timezone: str = DEFAULT_TIMEZONE
) -> str:
    """The node's config. Pin numbers are the reference cabinet's wiring (docs/provisioning.md)."""
    return f"""\
# speaker-node configuration for {identity.node_id}, written by speaker-provision node new.
[node]
id = {_toml_str(identity.node_id)}
groups = {_toml_list(identity.groups)}   # commune, district, province ("all" is implicit)
timezone = {_toml_str(timezone)}

[broker]
servers = {_toml_list(servers)}   # host:port, tried in order
topic_prefix = {_toml_str(topic_prefix)}
# Relative paths are relative to this file's folder ({ETC} on the node).
ca_file = "ca.crt"
cert_file = "node.crt"
key_file = "node.key"

[trust]
file = "trust.json"

[storage]
state_dir = "/var/lib/speaker-node"

[audio]
output = "alsa"
device = "default"

[relays]
amplifier = {{ pin = 17, active_high = true }}
zones = [ {{ name = "main", pin = 27, active_high = true }} ]

[inputs]
door = {{ pin = 5, active_high = false }}
mains = {{ pin = 6, active_high = true }}
amp_fault = {{ pin = 13, active_high = false }}

[modem]
port = "/dev/ttyModemAT"
"""


def validate_server(server: str) -> str:
    host, sep, port = server.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError([f"broker {server!r} must be host:port, e.g. broker.example.vn:8883"])
    return server


def district_defaults(district_dir: Path) -> tuple[list[str], str]:
    """Broker servers and topic prefix from DIR/district.toml, tolerating the shapes init may write."""
    path = district_dir / "district.toml"
    if not path.exists():
        return [], "spk"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: {exc}"]) from exc
    broker = data.get("broker", {})
    if isinstance(broker, str):  # speaker-district init writes: broker = "host:port"
        broker = {"servers": [broker]}
    servers = broker.get("servers") or []
    if not servers and broker.get("host"):
        servers = [f"{broker['host']}:{broker.get('port', 8883)}"]
    if isinstance(servers, str):
        servers = [servers]
    prefix = broker.get("topic_prefix") or data.get("topic_prefix") or "spk"
    return [str(s) for s in servers], str(prefix)


def create_node(
    district_dir: Path,
    identity: NodeIdentity,
    out_dir: Path,
    servers: list[str] | None = None,
    *,
    replace: bool = False,
    allow_loopback: bool = False,
) -> tuple[Path, str]:
    """Write OUT/<id>/ and register the certificate. Returns (node folder, fingerprint)."""
    district_dir = Path(district_dir)
    ws = Workspace(district_dir)
    trust = district_dir / "trust.json"
    if not trust.is_file():
        raise ConfigError([f"{trust} is missing: the district must sign a trust document first"])
    default_servers, prefix = district_defaults(district_dir)
    source = "--broker" if servers else f"{district_dir / 'district.toml'}"
    servers = [validate_server(s) for s in (servers or default_servers)]
    if not servers:
        raise ConfigError(
            ["no broker address: pass --broker host:port (the address nodes reach the district broker at)"]
        )
    if not allow_loopback:
        loopback = [p for s in servers if (p := loopback_problem(s))]
        if loopback:
            raise ConfigError([f"{source}: {p}; pass --broker HOST:PORT" for p in loopback])
    node_dir = Path(out_dir) / identity.node_id
    if node_dir.exists():
        raise ConfigError([msg("node_exists", path=node_dir)])
    key = pki.new_ec_key()
    issued = issue_node_cert(district_dir, identity.node_id, key.public_key(), replace=replace,
                             groups=identity.groups)
    node_dir.mkdir(parents=True, mode=0o700)
    pki.write_private_key(node_dir / "node.key", key)
    pki.write_cert(node_dir / "node.crt", issued.cert)
    shutil.copyfile(ws.ca_cert_path, node_dir / "ca.crt")
    shutil.copyfile(trust, node_dir / "trust.json")
    (node_dir / "node.toml").write_text(render_node_toml(identity, servers, prefix), encoding="utf-8")
    (node_dir / "identity.json").write_text(
        json.dumps(
            {
                "node_id": identity.node_id,
                "fingerprint": issued.fingerprint,
                "serial": f"{issued.serial:X}",
                "commune": identity.commune,
                "district": identity.district,
                "province": identity.province,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return node_dir, issued.fingerprint


def main(argv: list[str]) -> int:
    prog = "speaker-provision node"
    if not argv or argv[0] != "new":
        print(
            f"usage: {prog} new DISTRICT_DIR --commune C --district D --province P --cluster N -o OUTDIR",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(prog=f"{prog} new", description="Create one node's identity and config.")
    parser.add_argument("district_dir", type=Path)
    parser.add_argument("--commune", required=True, help="official 5-digit commune code, e.g. 27787")
    parser.add_argument("--district", required=True, help="3-digit district code, e.g. 760")
    parser.add_argument("--province", required=True, help="2-digit province code, e.g. 75")
    parser.add_argument("--cluster", required=True, help="cluster number in the commune, 1..99")
    parser.add_argument(
        "--broker",
        action="append",
        metavar="HOST:PORT",
        help="broker address nodes connect to (repeat for fallbacks); default: district.toml's broker "
        "(speaker-district init --broker-host); never a loopback address",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="replace a node (new card for the same pole): supersedes its certificate",
    )
    parser.add_argument("-o", "--out", type=Path, required=True, help="folder that receives <id>/")
    args = parser.parse_args(argv[1:])
    try:
        identity = make_identity(args.commune, args.district, args.province, args.cluster)
        node_dir, fp = create_node(args.district_dir, identity, args.out, args.broker, replace=args.replace)
    except (ConfigError, OSError) as exc:
        for problem in getattr(exc, "problems", [str(exc)]):
            print(f"{prog} new: {problem}", file=sys.stderr)
        return 2
    print(identity.node_id)
    print(msg("node_created", node_id=identity.node_id, path=node_dir), file=sys.stderr)
    print(msg("cert_fingerprint", fp=fp))
    return 0
