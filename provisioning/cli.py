"""`speaker-provision`: the field technician's tool (laptop side)."""

from node.clidispatch import dispatch

COMMANDS = {
    "node": ("provisioning.node_new", "'node new': key, certificate, config and trust for one node"),
    "sdcard": ("provisioning.sdcard", "write a node's identity onto a Raspberry Pi OS card or image"),
    "bundle": ("provisioning.bundle", "build the offline wheel bundle for arm64/armhf"),
    "label": ("provisioning.label", "printable cabinet-door label with a QR code"),
}


def main(argv=None) -> int:
    return dispatch("speaker-provision", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
