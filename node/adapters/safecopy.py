"""The second place for what the node must never roll back: a small JSON file next to state.db.

It holds the trust chain (so a revoked key stays revoked when state.db is deleted or rebuilt), the
schedule and config envelopes (exact signed bytes, verified again before use), the time floor, the
reset epoch and the birth counter. Written atomically (temp file, fsync, rename, fsync of the
directory) only when one of those changes: a few writes a day, no SD wear to speak of.

Nothing read from here is trusted as parsed: envelopes are verified again, the trust chain is walked
from the provisioned root, and a damaged or unreadable copy counts as absent.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MAX_COPY_BYTES = 8 * 1024 * 1024  # a trust chain and two envelopes are a few hundred kB at most


class SafeCopy:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.stale = False  # the last save failed (medium full or read-only): saved again later

    def load(self) -> dict | None:
        try:
            if self.path.stat().st_size > MAX_COPY_BYTES:
                log.error("safe copy %s is too large: ignored", self.path)
                return None
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("safe copy %s unreadable (%s): ignored", self.path, exc)
            return None
        return data if isinstance(data, dict) and data.get("v") == 1 else None

    def document(self, kind: str) -> tuple[int, bytes] | None:
        entry = ((self.load() or {}).get("documents") or {}).get(kind)
        try:
            return int(entry["version"]), base64.b64decode(entry["envelope"], validate=True)
        except (TypeError, KeyError, ValueError):
            return None

    def save(self, values: dict, documents: dict[str, tuple[int, bytes]]) -> bool:
        data = {"v": 1, "kv": values,
                "documents": {kind: {"version": version, "envelope": base64.b64encode(envelope).decode()}
                              for kind, (version, envelope) in documents.items()}}
        temp = self.path.with_name(self.path.name + ".tmp")
        try:
            from node.adapters import faults

            faults.reached("copy")
            with open(temp, "wb") as f:
                f.write(json.dumps(data, separators=(",", ":")).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("safe copy %s not written: %s", self.path, exc)
            try:
                temp.unlink(missing_ok=True)
            except OSError:
                pass
            self.stale = True
            return False
        self.stale = False
        return True
