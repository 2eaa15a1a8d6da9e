"""Fault-injection harness: the REAL daemon (`speaker-node run`, simulated hardware) against the real
Mosquitto test broker and HTTPS content server, with its state directory on a small filesystem that a
test can fill, remount read-only or damage, and a kill -9 hook at the N-th write of any state kind
(node/adapters/faults.py: SPEAKER_FAULT_KILL_AT). Needs root for `mount` (tests skip without it).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from support import NodeProcess, district_probe, wait_until, write_node_config

NODE = "27787-01"
FAULT_KINDS = ("kv", "seen", "journal", "document", "outbox", "outbox_sent", "outbox_ack", "cache", "copy")


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


class SmallFs:
    """A tmpfs of `size` at `path` (a real kernel filesystem: ENOSPC and EROFS come from the kernel)."""

    def __init__(self, path: Path, size: str = "16m"):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(self.path)],
                       check=True, capture_output=True)
        self.filler = self.path / "filler"

    def fill(self) -> int:
        """Write zeros until the kernel says ENOSPC; returns the bytes it took."""
        written = 0
        # Unbuffered: a buffered file that hit ENOSPC mid-block raises again when it is closed (the rest
        # of its buffer), depending on how much space the files before it happened to leave.
        with open(self.filler, "ab", buffering=0) as f:
            block = b"\0" * 65536
            try:
                while True:
                    written += f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        # the last partial block may still fit: fill to the last byte
        for size in (4096, 512, 1):
            try:
                with open(self.filler, "ab", buffering=0) as f:
                    while True:
                        written += f.write(b"\0" * size)
            except OSError:
                pass
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True, capture_output=True)

    def read_write(self) -> None:
        subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True, capture_output=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def node_config(tmp: Path, ws: Path, broker, state_dir: Path, *, retry: str = "1s") -> Path:
    """node.toml for the test node: state on `state_dir`, WAV output and the runtime dir (daemon lock)
    outside it (on a pole /run is a tmpfs of its own), stores retried every `retry`."""
    cfg = write_node_config(tmp / "node.toml", ws, NODE, [broker.address], state_dir=state_dir)
    text = cfg.read_text()
    text = re.sub(r'(?m)^state_dir = .*$', lambda m: f'{m.group(0)}\nruntime_dir = "{tmp / "run"}"\n'
                  f'fault_retry = "{retry}"', text, count=1)
    text = text.replace('[audio]\noutput = "wav"', f'[audio]\noutput = "wav"\nwav_dir = "{tmp / "wav"}"', 1)
    cfg.write_text(text)
    return cfg


class Watcher:
    """The district's view: status, deltas and events of the test node, kept in order."""

    def __init__(self, broker, ws: Path, name: str):
        self.probe = district_probe(broker, ws, client_id=f"{name}-{os.getpid()}-{time.monotonic_ns()}")

    def messages(self, suffix: str) -> list[dict]:
        out = []
        for topic, payload, _ in list(self.probe.seen):
            if topic == f"spk/node/{NODE}/{suffix}":
                try:
                    out.append(json.loads(payload))
                except ValueError:
                    pass
        return out

    def events(self, type_: str | None = None) -> list[dict]:
        return [o for o in self.messages("events") if o.get("kind") == "event" and type_ in (None, o.get("type"))]

    def records(self, **match) -> list[dict]:
        return [o for o in self.messages("events") if o.get("kind") == "play"
                and all(o.get(k) == v for k, v in match.items())]

    def rejections(self, command_id: str) -> list[str]:
        return [e["data"]["reason"] for e in self.events("rejected") if e["data"].get("command_id") == command_id]

    def online(self, birth: int | None = None, timeout: float = 30) -> dict:
        return self.probe.find(lambda t, o: t == f"spk/node/{NODE}/status" and o and o.get("online") is True
                               and (birth is None or o.get("birth") == birth), timeout=timeout)[1]

    def online_after(self, birth: int, timeout: float = 30) -> dict:
        """The first online status of a birth later than `birth` (a new start, not a retained copy)."""
        return self.probe.find(lambda t, o: t == f"spk/node/{NODE}/status" and o and o.get("online") is True
                               and o.get("birth", 0) > birth, timeout=timeout)[1]

    def storage_now(self) -> list[str] | None:
        """The node's `storage` field as the district knows it: last full status merged with deltas."""
        value = None
        for topic, payload, _ in list(self.probe.seen):
            if topic in (f"spk/node/{NODE}/status", f"spk/node/{NODE}/delta"):
                obj = json.loads(payload)
                if "storage" in obj:
                    value = obj["storage"]
        return value

    def assert_schemas(self) -> int:
        """Every status, delta and event the node sent matches its schema (node/schemas)."""
        from node.schemas import errors, schema_for

        checked = 0
        for topic, payload, _ in list(self.probe.seen):
            if f"/{NODE}/" in topic:
                obj = json.loads(payload)
                kind = topic.rsplit("/", 1)[-1]
                name = {"status": "status", "delta": "delta"}.get(kind) or schema_for(obj)
                assert errors(name, obj) == [], (topic, obj)
                checked += 1
        return checked

    def wait(self, predicate, timeout: float = 30):
        return wait_until(predicate, timeout=timeout, interval=0.1)

    def close(self) -> None:
        self.probe.close()


def start(cfg: Path, python: str, fault: str | None = None) -> NodeProcess:
    env = {"SPEAKER_FAULT_KILL_AT": fault} if fault else {"SPEAKER_FAULT_KILL_AT": ""}
    return NodeProcess(cfg, python, env=env)


def wait_exit(node: NodeProcess, timeout: float) -> int | None:
    try:
        return node.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def tone(path: Path, seconds: float = 0.6, rate: int = 16000) -> Path:
    import math
    import struct
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))
    return path


def garbage(path: Path, size: int = 8192) -> None:
    """Replace a database with random bytes (and drop its -wal/-shm, as a torn card would)."""
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.write_bytes(os.urandom(size))


def stored_birth(state_dir: Path) -> int:
    """The birth counter on disk: every status a dead daemon could have sent has a birth <= this, and
    the next start has a greater one (so a test never mistakes an old status for the new start)."""
    import sqlite3

    path = state_dir / "state.db"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM kv WHERE key = 'birth'").fetchone()
        return int(json.loads(row[0])) if row else 0
    finally:
        db.close()


def quick_check(path: Path) -> str:
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        db.close()
