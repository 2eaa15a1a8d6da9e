"""Build the district broker's identity fence, a small Mosquitto plugin (provisioning/broker/speaker_fence.c).

Mosquitto 2.0.11 with `use_identity_as_username` calls no plugin for a certificate client and hands the
session of whatever client id it asks for to it, so the fence replaces that option (see the C source).
It is compiled on the district machine against Debian's `mosquitto-dev`, `libmosquitto-dev` and
`libssl-dev` with gcc (.ci/setup installs them); the node carries none of it. The build is cached by the
hash of the source and copied next to the generated mosquitto.conf.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

PLUGIN_NAME = "speaker_fence.so"
HEADERS = ("/usr/include/mosquitto_broker.h", "/usr/include/mosquitto_plugin.h", "/usr/include/mosquitto.h",
           "/usr/include/openssl/x509.h")


class FenceBuildError(RuntimeError):
    """The plugin could not be compiled (missing compiler or headers, or a compiler error)."""


def _source() -> bytes:
    return resources.files("provisioning").joinpath("broker", "speaker_fence.c").read_bytes()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "speaker-district"


def build_plugin(cache_dir: Path | None = None) -> Path:
    """Compile the plugin once per source version; returns the cached shared object."""
    source = _source()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache_dir = Path(cache_dir or _cache_dir())
    built = cache_dir / f"speaker_fence-{digest}.so"
    if built.exists():
        return built
    compiler = shutil.which("gcc") or shutil.which("cc")
    missing = [h for h in HEADERS if not Path(h).exists()]
    if not compiler or missing:
        raise FenceBuildError(
            "building the broker's identity fence needs gcc and the headers of mosquitto-dev, libmosquitto-dev "
            f"and libssl-dev (apt-get install gcc mosquitto-dev libmosquitto-dev libssl-dev); missing: "
            f"{', '.join(missing) or 'a C compiler'}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        src = Path(tmp) / "speaker_fence.c"
        src.write_bytes(source)
        out = Path(tmp) / PLUGIN_NAME
        result = subprocess.run(
            [compiler, "-std=c99", "-D_DEFAULT_SOURCE", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC",
             "-shared", "-o", str(out), str(src), "-lcrypto"],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise FenceBuildError(f"compiling speaker_fence.c failed:\n{result.stderr.strip()}")
        os.replace(out, built)  # atomic: parallel builds of the same source agree
    return built


def install_plugin(out_dir: Path) -> Path:
    """Put the plugin next to mosquitto.conf, readable by the broker's user (it drops to 'mosquitto')."""
    target = Path(out_dir) / PLUGIN_NAME
    built = build_plugin()
    if target.exists() and target.read_bytes() == built.read_bytes():
        return target
    tmp = target.with_suffix(".so.tmp")
    shutil.copyfile(built, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target
