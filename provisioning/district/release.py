"""`speaker-district release DIR WHEELHOUSE --version V -o RELEASE`: a signed software release.

WHEELHOUSE is an offline wheel bundle (`speaker-provision bundle`, or any directory of wheels holding
speaker-node==V and everything it needs). RELEASE is written as a directory that can be served as it
is over HTTPS: the wheels, and release.json - the DSSE envelope signed by two `release` keys
(release-a, release-b). `speaker-district send DIR update --release RELEASE --url URL-OF-THAT-DIR`
then tells nodes to install it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from pathlib import Path

from node.content.download import hash_file
from node.errors import RemoteDataError
from node.trust.durations import format_time, parse_duration
from node.trust.envelope import PAYLOAD_RELEASE
from node.update.release import ARCHITECTURES, RELEASE_ROLE, parse_release_body, release_threshold, version_key
from provisioning.district import signing
from provisioning.district.signing import RELEASE_SIGNERS
from provisioning.district.workspace import Workspace, WorkspaceError

RELEASE_FILE = "release.json"
PACKAGE = "speaker-node"


def _wheel_version(name: str) -> str | None:
    parts = name.split("-")
    return parts[1] if len(parts) >= 5 and parts[0].replace("-", "_") == PACKAGE.replace("-", "_") else None


def build_release_body(wheelhouse: Path, *, version: str, min_version: str, architectures: list[str],
                       pythons: list[str], downgrade: bool, now: dt.datetime,
                       valid_for: dt.timedelta) -> dict:
    wheels = sorted(wheelhouse.glob("*.whl"))
    ours = [w for w in wheels if _wheel_version(w.name) is not None]
    if not any(_wheel_version(w.name) == version for w in ours):
        found = ", ".join(sorted({_wheel_version(w.name) for w in ours})) or "none"
        raise WorkspaceError(f"{wheelhouse} has no {PACKAGE} {version} wheel (found: {found})")
    files = []
    for wheel in wheels:
        if _wheel_version(wheel.name) not in (None, version):
            continue                        # another version of ourselves: not part of this release
        sha256, length = hash_file(wheel)
        files.append({"name": wheel.name, "sha256": sha256, "length": length})
    body = {"v": 1, "type": "release", "version": version, "min_version": min_version, "package": PACKAGE,
            "architectures": architectures, "python": pythons, "files": files,
            "issued_at": format_time(now), "expires": format_time(now + valid_for)}
    if downgrade:
        body["downgrade"] = True
    parse_release_body(signing.encode_body(body))    # the node's own parser: refuse what nodes would
    return body


def write_release(workspace: Workspace, wheelhouse: Path, out: Path, **fields) -> bytes:
    trust = workspace.trust
    holders = [k for k in trust.keys.values() if RELEASE_ROLE in k.roles and k.keyid not in trust.revoked]
    needed = release_threshold(trust)
    if len(holders) < needed:
        raise WorkspaceError(
            f"trust version {trust.version} has {len(holders)} {RELEASE_ROLE!r} key(s), {needed} needed; "
            "add them with: speaker-district send DIR trust --add-key release-a:release "
            "--add-key release-b:release")
    body = build_release_body(wheelhouse, **fields)
    keys = [workspace.key(name) for name in RELEASE_SIGNERS]
    envelope = signing.sign_envelope(PAYLOAD_RELEASE, signing.encode_body(body), keys)
    out.mkdir(parents=True, exist_ok=True)
    for f in body["files"]:
        if (wheelhouse / f["name"]).resolve() != (out / f["name"]).resolve():
            shutil.copy2(wheelhouse / f["name"], out / f["name"])
    (out / RELEASE_FILE).write_bytes(envelope)
    return envelope


def main(argv: list[str]) -> int:
    prog = "speaker-district release"
    p = argparse.ArgumentParser(prog=prog, description="Sign a software release from a wheel bundle.")
    p.add_argument("directory", help="district workspace")
    p.add_argument("wheelhouse", type=Path, help="offline wheel bundle (speaker-provision bundle)")
    p.add_argument("--version", required=True, help="the speaker-node version in the bundle, e.g. 0.2.0")
    p.add_argument("--min-version", help="oldest version that may update to this one (default: any)")
    p.add_argument("--arch", action="append", choices=ARCHITECTURES,
                   help="architectures the wheels are for (default: from the bundle's manifest.json)")
    p.add_argument("--python", action="append", help="Python versions (default: from manifest.json)")
    p.add_argument("--downgrade", action="store_true",
                   help="allow nodes running a newer version to install this one (a signed downgrade)")
    p.add_argument("--valid-for", default="90d", help="how long nodes may start installing it (default 90d)")
    p.add_argument("-o", "--output", type=Path, required=True, help="release directory to write")
    a = p.parse_args(argv)
    manifest = {}
    if (a.wheelhouse / "manifest.json").exists():
        manifest = json.loads((a.wheelhouse / "manifest.json").read_text(encoding="utf-8"))
    try:
        version_key(a.version)
        archs = a.arch or manifest.get("arch") or ["arm64"]
        pythons = a.python or manifest.get("python") or ["3.11"]
        workspace = Workspace.load(a.directory)
        envelope = write_release(workspace, a.wheelhouse, a.output, version=a.version,
                                 min_version=a.min_version or "0.0", architectures=archs, pythons=pythons,
                                 downgrade=a.downgrade, now=signing.now_utc(),
                                 valid_for=parse_duration(a.valid_for))
    except (WorkspaceError, RemoteDataError, ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    print(f"{prog}: {a.output / RELEASE_FILE} ({len(envelope)} bytes): speaker-node {a.version} for "
          f"{', '.join(archs)} / Python {', '.join(pythons)}", file=sys.stderr)
    return 0
