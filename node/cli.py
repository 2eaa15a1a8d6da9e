"""`speaker-node`: the command run on a node (and, with --simulate, on a laptop)."""

from node.clidispatch import dispatch

COMMANDS = {
    "run": ("node.daemon", "run the node daemon (systemd starts this)"),
    "check-config": ("node.config", "check a node.toml and list every problem at once"),
    "verify": ("node.trust.cli_verify", "verify an audio file against its signed manifest"),
    "modem": ("node.modem.cli", "talk to the 4G modem: 'modem status --port PORT [--json]'"),
    "selftest": ("node.selftest", "technician self-test at the pole"),
    "relays-off": ("node.playback.relays_off", "force every relay off (systemd ExecStopPost)"),
    "wipe": ("node.wipe", "decommission: erase keys, caches and records"),
    "update-apply": ("node.update.apply", "root: install, switch, commit or roll back as the update asks"),
    "update-guard": ("node.update.guard", "before a start: count it, roll back an update that keeps failing"),
}


def main(argv=None) -> int:
    return dispatch("speaker-node", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
