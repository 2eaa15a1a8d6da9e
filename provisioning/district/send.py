"""`speaker-district send DIR [--broker HOST:PORT] KIND ...`: sign a command and publish it (QoS 1, mTLS).

One publish per target topic (spk/node/ID/cmd or spk/group/G/cmd); prints the command id on stdout and
exits 0 only after every PUBACK. `--print` writes the signed envelope to stdout instead of publishing.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
import threading
from pathlib import Path

from node.errors import RemoteDataError
from node.topics import mqtt_client_id
from node.trust.durations import parse_cli_time, parse_duration
from provisioning.district import signing
from provisioning.district.workspace import Workspace, WorkspaceError, bump_trust

_TARGET = re.compile(r"^(\d{5}-\d{2}|[cdp]\d{1,6}|all)$")


class UsageError(Exception):
    pass


def _targets(text: str) -> list[str]:
    targets = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in targets if not _TARGET.match(t)]
    if not targets or bad:
        raise UsageError(f"--to {text!r}: targets are node ids (27787-03) or groups (c27787, d760, p75, all)")
    return targets


def _setting_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _content_body(args) -> dict:
    if args.audio:
        fields = signing.content_fields(args.audio, duration=args.duration, codec=args.codec)
        content_id = args.content_id or signing.content_id_for(args.audio, fields["sha256"])
    else:
        needed = ("content_id", "sha256", "length", "duration")
        missing = ["--" + name.replace("_", "-") for name in needed if getattr(args, name) is None]
        if missing:
            raise UsageError(f"play needs --audio FILE or all of {', '.join(missing)}")
        fields = {"sha256": args.sha256, "length": args.length, "duration": args.duration,
                  "codec": args.codec or "mp3"}
        content_id = args.content_id
    body = {"content_id": content_id, "level": args.level, "url": args.url, **fields,
            "volume": args.volume, "start_at": args.start_at, "zones": None}
    if args.title:
        body["title"] = args.title
    return body


def build_body(kind: str, args) -> dict:
    if kind == "play":
        return _content_body(args)
    if kind == "stop":
        chosen = [x for x in (args.content_id, args.level, args.all or None) if x is not None]
        if len(chosen) != 1:
            raise UsageError("stop needs exactly one of --content-id, --level or --all")
        return {"content_id": args.content_id, "level": args.level, "all": bool(args.all)}
    if kind == "schedule":
        try:
            return json.loads(Path(args.file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--file {args.file}: {exc}") from None
    if kind == "live":
        return {"url": args.url, "max_duration": parse_duration(args.max_duration).total_seconds(),
                "level": args.level, "volume": args.volume, "grace": args.grace}
    if kind == "config":
        settings = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"--set {item!r}: use key=value")
            settings[key.strip()] = _setting_value(value)
        return {"version": args.version, "settings": settings}
    if kind == "update":
        return _update_body(args)
    raise UsageError(f"unknown kind {kind}")


def _update_body(args) -> dict:
    """The signed release embedded whole: the node verifies both, and needs no extra download to."""
    release_file = Path(args.release)
    if release_file.is_dir():
        release_file = release_file / "release.json"
    try:
        release = release_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--release {args.release}: {exc}") from None
    body = {"release": release, "files_url": args.url}
    if args.percent is not None:
        if not 1 <= args.percent <= 100:
            raise UsageError("--percent must be between 1 and 100")
        # The salt picks which nodes are "the first N %": the same salt keeps them as N grows.
        body["rollout"] = {"percent": args.percent, "salt": args.salt or "rollout"}
    return body


def publish(workspace: Workspace, broker: str, topics: list[str], payload: bytes, timeout: float) -> None:
    """Connect with mTLS, publish QoS 1 to every topic, return after all PUBACKs (else raise)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    host, _, port = broker.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    tls = workspace.directory / "tls"
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=mqtt_client_id("district", f"send-{secrets.token_hex(4)}"), protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(tls / "ca.crt"), certfile=str(tls / "district.crt"),
                   keyfile=str(tls / "district.key"))
    connected, result = threading.Event(), {}

    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        connected.set()

    def on_publish(client, userdata, mid, reason_code, properties):
        acks[mid] = reason_code

    acks: dict = {}
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(host, int(port or 8883), keepalive=30)
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise ConnectionError(f"no CONNACK from {broker} within {timeout:g} s")
        if result["rc"].is_failure:
            raise ConnectionError(f"broker {broker} refused the connection: {result['rc']}")
        infos = [client.publish(topic, payload, qos=1) for topic in topics]
        for topic, info in zip(topics, infos):
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise ConnectionError(f"no PUBACK for {topic} within {timeout:g} s")
            # MQTT v5: the broker says in the PUBACK whether it took the message (ACL, quota...).
            code = acks.get(info.mid)
            if code is not None and code.is_failure:
                raise ConnectionError(f"broker refused the publish to {topic}: {code}")
    finally:
        client.disconnect()
        client.loop_stop()


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("--print", dest="print_only", action="store_true", default=default(False),
                        help="write the signed envelope to stdout instead of publishing")
    parser.add_argument("--id", dest="command_id", default=default(None), help="force the command id")
    parser.add_argument("--not-before", default=default(None), help="ISO 8601 time (default now)")
    parser.add_argument("--expires", default=default(None), help="ISO 8601 time")
    parser.add_argument("--valid-for", default=default(None), help="e.g. 90s, 30m, 2h, 7d")
    parser.add_argument("--timeout", type=float, default=default(10.0), help="seconds to wait for the broker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speaker-district send",
                                     description="Sign a command with the workspace keys and publish it.")
    parser.add_argument("directory", help="district workspace")
    parser.add_argument("--broker", help="HOST:PORT (default: district.toml broker)")
    _add_common(parser, suppress=False)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")

    def kind(name, text, to_required=True):
        sub = kinds.add_parser(name, help=text)
        sub.add_argument("--to", required=to_required, default="all", help="targets: 27787-03,c27787,all")
        _add_common(sub, suppress=True)
        return sub

    play = kind("play", "play a bulletin")
    play.add_argument("--audio", help="audio file: computes sha256, length, duration")
    play.add_argument("--url", help="https URL the node downloads from")
    play.add_argument("--content-id")
    play.add_argument("--sha256")
    play.add_argument("--length", type=int)
    play.add_argument("--duration", type=float, help="seconds")
    play.add_argument("--codec")
    play.add_argument("--level", default="normal", choices=("normal", "priority", "emergency"))
    play.add_argument("--volume", type=int)
    play.add_argument("--start-at", type=lambda t: signing.format_time(parse_cli_time(t)))
    play.add_argument("--title")
    stop = kind("stop", "stop playing")
    stop.add_argument("--content-id")
    stop.add_argument("--level", choices=("normal", "priority", "emergency"))
    stop.add_argument("--all", action="store_true")
    schedule = kind("schedule", "replace the weekly schedule")
    schedule.add_argument("--file", required=True, help="schedule body JSON (with its version)")
    live = kind("live", "relay a live stream")
    live.add_argument("--url", required=True)
    live.add_argument("--max-duration", required=True, help="e.g. 30m, 2h")
    live.add_argument("--level", default="normal", choices=("normal", "priority", "emergency"))
    live.add_argument("--volume", type=int)
    live.add_argument("--grace", type=float, default=30.0, help="reconnect window in seconds")
    config = kind("config", "change node settings")
    config.add_argument("--version", type=int, required=True)
    config.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    update = kind("update", "install a signed software release (speaker-district release)")
    update.add_argument("--release", required=True, help="release directory (or its release.json)")
    update.add_argument("--url", required=True, help="https URL where the release directory is served")
    update.add_argument("--percent", type=int, help="staged rollout: only this share of the targets")
    update.add_argument("--salt", help="rollout salt (default 'rollout'); keep it while widening --percent")
    trust = kind("trust", "publish the next trust document version", to_required=False)
    trust.add_argument("--revoke", action="append", default=[], metavar="KEYID|NAME")
    trust.add_argument("--emergency-threshold", type=int)
    trust.add_argument("--add-key", action="append", default=[], metavar="NAME:ROLE[,ROLE]",
                       help="generate a new signing key with these roles (e.g. release-a:release)")
    trust.add_argument("--drop-role", action="append", default=[], metavar="NAME:ROLE[,ROLE]",
                       help="take roles away from an existing key (e.g. schedule:time once the key 'time' exists)")
    return parser


def _name_roles(option: str, items: list[str]) -> dict[str, list[str]]:
    parsed = {}
    for item in items:
        name, sep, roles = item.partition(":")
        if not sep or not name or not roles:
            raise UsageError(f"{option} {item!r}: use NAME:ROLE[,ROLE]")
        parsed[name] = [r for r in roles.split(",") if r]
    return parsed


def _times(args) -> dict:
    times = {}
    if args.not_before:
        times["not_before"] = parse_cli_time(args.not_before)
    if args.expires:
        times["expires"] = parse_cli_time(args.expires)
    if args.valid_for:
        times["valid_for"] = parse_duration(args.valid_for)
    return times


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    prog = "speaker-district send"
    try:
        workspace = Workspace.load(args.directory)
        targets = _targets(args.to)
        if args.kind == "trust":
            envelope = bump_trust(workspace.directory, revoke=args.revoke,
                                  add_keys=_name_roles("--add-key", args.add_key),
                                  drop_roles=_name_roles("--drop-role", args.drop_role),
                                  emergency_threshold=args.emergency_threshold)
            label = f"trust-v{Workspace.load(workspace.directory).trust.version}"
        else:
            command = signing.build_command(args.kind, build_body(args.kind, args), targets=targets,
                                            command_id=args.command_id, **_times(args))
            envelope = signing.sign_command(command, workspace.signing_keys(command))
            label = command["id"]
    except (UsageError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except RemoteDataError as exc:
        print(f"{prog}: error: a node would reject this command: {exc.reason}: {exc.detail}", file=sys.stderr)
        return 2
    except (WorkspaceError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    if args.print_only:
        sys.stdout.write(envelope.decode("ascii") + "\n")
        return 0
    topics = list(dict.fromkeys(workspace.topic_for(t) for t in targets))
    try:
        publish(workspace, args.broker or workspace.broker, topics, envelope, args.timeout)
    except (ConnectionError, OSError, RuntimeError, ValueError) as exc:
        print(f"{prog}: error: not delivered: {exc}", file=sys.stderr)
        return 1
    print(label)
    return 0
