"""`speaker-district broker-config DIR -o OUTDIR`: Mosquitto config + ACL for this district's nodes.

The ACL lets each node read only its own and its groups' command topics. Groups are not derivable
from a certificate CN with Mosquitto's %u patterns, so each node gets a `user` section generated from
the node registry (DIR/nodes/registry.json, written when certificates are issued).
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from provisioning.district.fence_plugin import FenceBuildError, install_plugin


def _template(name: str) -> str:
    return resources.files("provisioning").joinpath("broker", name).read_text(encoding="utf-8")


def read_registry(workspace: Path) -> dict[str, list[str]]:
    """{node_id: groups} of every node with an active certificate (DIR/nodes/registry.json, written by
    `speaker-district issue-cert` / `speaker-provision node new`). Revoked nodes get no ACL section:
    the CRL already refuses them, and this keeps a stolen card from reading commands if the CRL lapses."""
    path = Path(workspace) / "nodes" / "registry.json"
    if not path.exists():
        return {}
    registry = json.loads(path.read_text())
    nodes = {}
    for node_id, certificates in registry.get("nodes", {}).items():
        active = [c for c in certificates if not c.get("revoked_at")]
        if active:
            nodes[node_id] = sorted(set(active[-1].get("groups") or []) | {f"c{node_id.split('-')[0]}"})
    return nodes


def render_acl(prefix: str, nodes: dict[str, list[str]]) -> str:
    sections = []
    for node_id in sorted(nodes):
        lines = [f"\nuser {node_id}"]
        lines += [f"topic read {prefix}/group/{g}/cmd" for g in sorted(set(nodes[node_id]) - {"all"})]
        sections.append("\n".join(lines))
    return _template("acl.template").format(prefix=prefix, node_sections="\n".join(sections))


def _ensure_crl(workspace: Path) -> Path:
    """The broker always loads a CRL (the listener and the identity fence read the same file), so a later
    `speaker-district revoke` rewrites a file the broker already watches instead of needing a new config."""
    from provisioning.district.certs import Workspace, write_crl

    ws = Workspace(workspace)
    if not ws.crl_path.exists():
        with ws.locked():
            write_crl(ws, ws.load_registry())
    return ws.crl_path


def write_broker_config(
    workspace: str | Path, out_dir: str | Path, *, port: int = 8883, bind: str = "0.0.0.0",
    prefix: str = "spk", nodes: dict[str, list[str]] | None = None, run_as_root: bool = False,
    persistence: bool = True, log_dest: str = "stderr",
) -> Path:
    """Write mosquitto.conf and acl into out_dir; returns the path of mosquitto.conf."""
    workspace, out_dir = Path(workspace).resolve(), Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    nodes = read_registry(workspace) if nodes is None else nodes
    tls = workspace / "tls"
    acl_path = out_dir / "acl"
    acl_path.write_text(render_acl(prefix, nodes))
    crl = _ensure_crl(workspace)
    data_dir = out_dir / "data"
    data_dir.mkdir(exist_ok=True)
    conf = _template("mosquitto.conf.template").format(
        # Mosquitto started as root drops to user 'mosquitto', which cannot read 0600 keys owned by
        # another user; tests and the demo run it as the invoking user instead.
        user_line="user root" if run_as_root else "",
        persistence="true" if persistence else "false",
        persistence_dir=data_dir, log_dest=log_dest, port=port, bind=bind,
        cafile=tls / "ca.crt", certfile=tls / "broker.crt", keyfile=tls / "broker.key",
        crlfile=crl, acl_file=acl_path, plugin=install_plugin(out_dir),
    )
    conf_path = out_dir / "mosquitto.conf"
    conf_path.write_text(conf)
    return conf_path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speaker-district broker-config", description=__doc__.splitlines()[0])
    p.add_argument("workspace")
    p.add_argument("-o", "--out", required=True, help="directory for mosquitto.conf and acl")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--prefix", default="spk")
    p.add_argument("--run-as-root", action="store_true",
                   help="add 'user root' so a Mosquitto started as root keeps reading the 0600 broker key "
                        "(otherwise it drops to user mosquitto: make tls/broker.key readable by it)")
    args = p.parse_args(argv)
    if not (Path(args.workspace) / "tls" / "ca.crt").exists():
        print(f"speaker-district: {args.workspace} is not a district workspace (run 'speaker-district init')",
              file=sys.stderr)
        return 2
    # Production: Mosquitto drops to its own user, so DIR/tls/broker.key must be readable by it.
    try:
        conf = write_broker_config(args.workspace, args.out, port=args.port, bind=args.bind, prefix=args.prefix,
                                   run_as_root=args.run_as_root)
    except FenceBuildError as exc:
        print(f"speaker-district broker-config: {exc}", file=sys.stderr)
        return 2
    print(conf)
    if not args.run_as_root:
        print("speaker-district broker-config: Mosquitto started as root drops to user 'mosquitto', which "
              "cannot read tls/broker.key (0600): pass --run-as-root, or chgrp mosquitto the key and "
              "chmod 0640 it and its folder", file=sys.stderr)
    return 0
