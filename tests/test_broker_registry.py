"""The shipped broker config built from the district's own registry: provisioned nodes get their group
ACL, and a revoked node certificate is refused by the real Mosquitto (CRL reloaded on SIGHUP)."""

from __future__ import annotations

import ssl

from support import try_connect

from provisioning.district.broker_config import read_registry
from provisioning.district.certs import revoke_node
from provisioning.district.localbroker import LocalBroker
from provisioning.district.workspace import init_workspace
from provisioning.node_new import create_node
from provisioning.nodeid import NodeIdentity


def _connects(broker, node_dir) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(node_dir / "ca.crt"))
    ctx.load_cert_chain(str(node_dir / "node.crt"), str(node_dir / "node.key"))
    return try_connect(broker, ctx, node_dir.name)


def test_revoked_node_is_refused_by_the_shipped_broker_config_and_loses_its_acl(tmp_path):
    ws = tmp_path / "district"
    init_workspace(ws, district="test")
    nodes = {}
    for cluster in (1, 2):
        ident = NodeIdentity(commune="27787", district="760", province="75", cluster=cluster)
        # a broker on this machine: loopback is right here
        nodes[ident.node_id], _ = create_node(ws, ident, tmp_path / "nodes", allow_loopback=True)
    assert read_registry(ws) == {"27787-01": ["c27787", "d760", "p75"], "27787-02": ["c27787", "d760", "p75"]}
    with LocalBroker(ws, tmp_path / "broker") as broker:     # ACL and CRL from the registry
        acl = (tmp_path / "broker" / "acl").read_text()
        assert "user 27787-01\ntopic read spk/group/c27787/cmd\ntopic read spk/group/d760/cmd" in acl
        assert _connects(broker, nodes["27787-01"]) and _connects(broker, nodes["27787-02"])

        revoke_node(ws, "27787-01", "keyCompromise")
        broker.reload()                                       # SIGHUP: returns once config, ACL and CRL are re-read
        assert not _connects(broker, nodes["27787-01"])
        assert _connects(broker, nodes["27787-02"])
        assert "user 27787-01" not in (tmp_path / "broker" / "acl").read_text()
