"""`speaker-node verify AUDIO MANIFEST --trust TRUSTFILE --node-id ID`: check a USB-stick file on the spot.

Exit 0 with a one-line summary when valid; 1 with "REJECTED <reason_code>: <detail>" on stderr when
not; 2 for usage errors. Never a traceback: a technician at the pole reads this.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from node.errors import RemoteDataError
from node.trust.durations import format_time, parse_cli_time
from node.trust.manifest import verify_audio_file
from node.trust.trustdoc import load_trust_file
from node.trust.verifier import Rejected

MAX_MANIFEST_BYTES = 1024 * 1024


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 already; keep its message short and on stderr
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="speaker-node verify",
                     description="Verify an audio file against its signed manifest (DSSE play command).")
    parser.add_argument("audio", help="the audio file")
    parser.add_argument("manifest", help="its signed manifest (e.g. AUDIO.manifest.json)")
    parser.add_argument("--trust", required=True, help="trust.json the node is provisioned with")
    parser.add_argument("--node-id", required=True, help="this node's id, e.g. 27787-03")
    parser.add_argument("--groups", default="", help="comma-separated groups, e.g. c27787,d760,p75")
    parser.add_argument("--at", help="check validity at this ISO 8601 time instead of now")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        at = parse_cli_time(args.at) if args.at else dt.datetime.now(dt.timezone.utc)
    except ValueError:
        print(f"speaker-node verify: error: --at {args.at!r} is not an ISO 8601 time", file=sys.stderr)
        return 2
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    try:
        with open(args.manifest, "rb") as f:
            manifest = f.read(MAX_MANIFEST_BYTES + 1)
        trust = load_trust_file(args.trust)
    except OSError as exc:
        print(f"speaker-node verify: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except RemoteDataError as exc:
        print(f"REJECTED {exc.reason}: trust file {args.trust}: {exc.detail}", file=sys.stderr)
        return 1
    decision = verify_audio_file(args.audio, manifest, trust, args.node_id, groups, at)
    if isinstance(decision, Rejected):
        print(f"REJECTED {decision.reason}: {decision.detail}", file=sys.stderr)
        return 1
    command = decision.command
    content = command.body.content
    print(f"OK content_id={content.content_id} level={command.level} sha256={content.sha256[:12]} "
          f"duration={content.duration:g}s valid until {format_time(command.expires)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
