"""The release tree on disk, and the persisted update record. The only IO of node.update.

    ROOT/releases/VERSION/venv/      one virtual environment per installed version
    ROOT/releases/VERSION/.complete  written last: a directory without it is a half-finished install
    ROOT/current   -> releases/VERSION   what systemd starts (ExecStart goes through this link)
    ROOT/committed -> releases/VERSION   the last version that passed its health check; its code is
                                         the guard that may roll an uncommitted `current` back

Links are switched by creating a new symlink beside the old one and renaming it over the old one:
rename(2) is atomic, so a power cut leaves either the old or the new target, never neither.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from node.adapters import faults
from node.update.state import UpdateRecord

COMPLETE_MARKER = ".complete"


class InstallError(Exception):
    """pip or venv failed while installing a release; the running version is untouched."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ReleaseTree:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.releases = self.root / "releases"

    # -- reading -------------------------------------------------------------------------------------
    def _link_version(self, name: str) -> str | None:
        link = self.root / name
        try:
            target = os.readlink(link)
        except OSError:
            return None
        parts = Path(target).parts
        return parts[-1] if len(parts) >= 2 and parts[-2] == "releases" else None

    def current(self) -> str | None:
        return self._link_version("current")

    def committed(self) -> str | None:
        return self._link_version("committed")

    def updatable(self) -> bool:
        """A node installed by first boot has the layout; a developer's editable install does not."""
        return self.current() is not None

    def venv(self, version: str) -> Path:
        return self.releases / version / "venv"

    def executable(self, link: str = "current") -> Path:
        return self.root / link / "venv" / "bin" / "speaker-node"

    def is_complete(self, version: str) -> bool:
        return (self.releases / version / COMPLETE_MARKER).exists()

    # -- changing ------------------------------------------------------------------------------------
    def point(self, name: str, version: str) -> None:
        """Atomically make ROOT/name -> releases/version."""
        if not self.is_complete(version):
            raise InstallError(f"refusing to point {name} at incomplete release {version}")
        tmp = self.root / f".{name}.new"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.path.join("releases", version), tmp)
        os.replace(tmp, self.root / name)
        _fsync_dir(self.root)

    def install(self, version: str, wheel_dir: Path, package: str, *, base_python: str | None = None,
                timeout: float = 900.0) -> None:
        """Install `package==version` offline from wheel_dir into releases/version/venv."""
        target = self.releases / version
        if self.is_complete(version):
            return
        if target.exists():
            shutil.rmtree(target)       # a half-finished install from before a power cut
        target.mkdir(parents=True)
        python = base_python or _base_python()
        venv_args = [python, "-m", "venv", "--without-pip"]
        if self._system_site_packages():
            venv_args.append("--system-site-packages")   # e.g. Debian's python3-lgpio on a Pi 5
        self._run(venv_args + [str(target / "venv")], timeout)
        new_python = str(target / "venv" / "bin" / "python")
        pip_args = ["install", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
                    "--no-warn-script-location", "--find-links", str(wheel_dir), f"{package}=={version}"]
        pip_wheels = sorted(Path(wheel_dir).glob("pip-*.whl"))
        if pip_wheels:
            # pip runs from its own wheel (a zip on sys.path): the new venv needs no pip of its own.
            self._run([new_python, str(pip_wheels[-1] / "pip"), *pip_args], timeout)
        else:
            # The running interpreter's pip installs into the new venv (pip >= 22.3 `--python`).
            self._run([sys.executable, "-m", "pip", "--python", new_python, *pip_args], timeout)
        # Nothing is fetched: --no-index, only the verified wheels.
        if not (target / "venv" / "bin" / "speaker-node").exists():
            raise InstallError(f"{package}=={version} installed no speaker-node command")
        marker = target / COMPLETE_MARKER
        marker.write_text(version + "\n")
        with open(marker, "rb+") as fh:
            os.fsync(fh.fileno())
        _fsync_dir(target)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove releases other than `keep` (and the link targets); returns what was removed."""
        keep = set(keep) | {v for v in (self.current(), self.committed()) if v}
        removed = []
        if self.releases.is_dir():
            for entry in sorted(self.releases.iterdir()):
                if entry.name not in keep and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed

    def _system_site_packages(self) -> bool:
        current = self.current()
        cfg = self.venv(current) / "pyvenv.cfg" if current else None
        if cfg is None or not cfg.exists():
            return False
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "include-system-site-packages":
                return value.strip().lower() == "true"
        return False

    @staticmethod
    def _run(argv: list[str], timeout: float) -> None:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(f"{Path(argv[0]).name}: {exc}") from None
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
            raise InstallError(f"{' '.join(argv[2:4])} failed: {lines[-1] if lines else proc.returncode}")


def _base_python() -> str:
    """The interpreter venvs are made from: the system Python, not this venv's python link."""
    return getattr(sys, "_base_executable", None) or sys.executable


class UpdateStateFile:
    """The update record on disk: written atomically and fsync'd before the state it names is entered."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> UpdateRecord:
        try:
            return UpdateRecord.from_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return UpdateRecord()
        except (ValueError, TypeError, KeyError) as exc:
            # A damaged record must not wedge updates forever: start over, keep the evidence.
            damaged = self.path.with_suffix(".damaged")
            os.replace(self.path, damaged)
            return UpdateRecord(reason=f"update state was damaged ({type(exc).__name__}); moved aside")

    def save(self, record: UpdateRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(record.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        faults.passed("update", record.state.value)  # test-only power cut (node/adapters/faults.py)


class FakeReleaseTree:
    """Recording fake for the service tests: installs are instant, links are strings."""

    def __init__(self, current: str | None = "0.1.0", committed: str | None = None,
                 fail_install: str | None = None):
        self.links = {"current": current, "committed": committed or current}
        self.installed = {current} if current else set()
        self.fail_install = fail_install
        self.history: list[tuple] = []

    def current(self):
        return self.links["current"]

    def committed(self):
        return self.links["committed"]

    def updatable(self):
        return self.links["current"] is not None

    def is_complete(self, version):
        return version in self.installed

    def install(self, version, wheel_dir, package, **_):
        self.history.append(("install", version))
        if self.fail_install:
            raise InstallError(self.fail_install)
        self.installed.add(version)

    def point(self, name, version):
        if version not in self.installed:
            raise InstallError(f"refusing to point {name} at incomplete release {version}")
        self.history.append(("point", name, version))
        self.links[name] = version

    def prune(self, keep):
        keep = set(keep) | {v for v in self.links.values() if v}
        removed = sorted(self.installed - keep)
        self.installed &= keep
        self.history.append(("prune", tuple(removed)))
        return removed
