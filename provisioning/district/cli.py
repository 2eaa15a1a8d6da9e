"""`speaker-district`: the reference district tool (keys, signing, sending, certificates, watching)."""

from node.clidispatch import dispatch

COMMANDS = {
    "init": ("provisioning.district.workspace", "create a district workspace: keys, trust.json, TLS CA"),
    "sign-audio": ("provisioning.district.sign_audio", "write a signed manifest beside an audio file"),
    "send": ("provisioning.district.send", "sign and publish a command (play, stop, schedule, live, trust...)"),
    "issue-cert": ("provisioning.district.certs", "issue a node TLS certificate (new key or from a CSR)"),
    "list-certs": ("provisioning.district.certs", "list issued node certificates"),
    "revoke": ("provisioning.district.certs", "revoke a node certificate"),
    "crl": ("provisioning.district.certs", "export the certificate revocation list for the broker"),
    "broker-config": ("provisioning.district.broker_config", "write Mosquitto config + ACL for this district"),
    "release": ("provisioning.district.release", "sign a software release from a wheel bundle"),
    "serve": ("provisioning.district.serve", "the long-running district service (time answers, ...)"),
    "serve-dir": ("provisioning.district.serve_dir", "write the online-only directory serve runs from"),
    "watch": ("provisioning.district.watch", "live table of nodes from their heartbeats"),
    "demo": ("provisioning.district.demo", "a whole district-in-a-box on this machine"),
    "records": ("provisioning.district.reports", "the events and play records the collector stored"),
    "report": ("provisioning.district.reports", "monthly proof-of-play report (royalties; --lang vi)"),
}


def main(argv=None) -> int:
    return dispatch("speaker-district", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
