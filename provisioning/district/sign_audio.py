"""`speaker-district sign-audio DIR AUDIO --to TARGETS -o MANIFEST`: a signed manifest for a USB stick.

The manifest is a DSSE "play" command with url null, carrying the file's SHA-256, length and duration.
Duration: WAV files are read with the stdlib `wave` module; other formats use `soxi -D` when sox is
installed, otherwise --duration SECONDS is required. Emergency manifests carry both emergency signatures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node.errors import RemoteDataError
from node.trust.durations import parse_cli_time, parse_duration
from provisioning.district import signing
from provisioning.district.send import UsageError, _targets
from provisioning.district.workspace import Workspace, WorkspaceError, _atomic_write

DEFAULT_VALID_FOR = "7d"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speaker-district sign-audio",
                                     description="Write a signed manifest for an audio file (USB delivery).")
    parser.add_argument("directory", help="district workspace")
    parser.add_argument("audio", help="audio file")
    parser.add_argument("--to", required=True, help="targets: 27787-03,c27787,all")
    parser.add_argument("--level", default="normal", choices=("normal", "priority", "emergency"))
    parser.add_argument("--valid-for", default=DEFAULT_VALID_FOR, help="e.g. 2h, 7d (default 7d, max 31d)")
    parser.add_argument("--not-before", help="ISO 8601 time (default now)")
    parser.add_argument("--content-id", help="default: file name + first 12 hex of its SHA-256")
    parser.add_argument("--codec", help="default: from the file extension")
    parser.add_argument("--duration", type=float, help="seconds (needed for non-WAV files without sox)")
    parser.add_argument("--title")
    parser.add_argument("--id", dest="command_id", help="force the command id")
    parser.add_argument("-o", "--output", required=True, help="manifest file to write")
    args = parser.parse_args(argv)
    prog = "speaker-district sign-audio"
    try:
        workspace = Workspace.load(args.directory)
        targets = _targets(args.to)
        fields = signing.content_fields(args.audio, duration=args.duration, codec=args.codec)
        body = {"content_id": args.content_id or signing.content_id_for(args.audio, fields["sha256"]),
                "level": args.level, "url": None, **fields, "volume": None, "start_at": None, "zones": None}
        if args.title:
            body["title"] = args.title
        times = {"valid_for": parse_duration(args.valid_for)}
        if args.not_before:
            times["not_before"] = parse_cli_time(args.not_before)
        command = signing.build_command("play", body, targets=targets, command_id=args.command_id, **times)
        envelope = signing.sign_command(command, workspace.signing_keys(command))
        _atomic_write(Path(args.output), envelope + b"\n")
    except (UsageError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except RemoteDataError as exc:
        print(f"{prog}: error: a node would reject this manifest: {exc.reason}: {exc.detail}",
              file=sys.stderr)
        return 2
    except (WorkspaceError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.output}: content_id={body['content_id']} id={command['id']} level={args.level} "
          f"expires={command['expires']}")
    return 0
