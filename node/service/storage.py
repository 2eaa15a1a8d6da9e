"""Storage faults: the node starts and keeps sounding in any storage state, says so, and heals itself.

At start (node.wiring) every store is opened by what it can still do: state.db and cache.db may be
rebuilt (damaged files moved aside) or live in memory (medium full, read-only or failing), the outbox
may live in memory. While any of them is degraded, the heartbeat carries `storage` (which stores) and
the `storage_fault` alarm; every `fault_retry` seconds StorageWatch tries to put them back on disk and
reports `storage_recovered`. It also settles a pending state reset as soon as the node has trusted
time (node.adapters.store.StateStore.reset_epoch), which reports `state_reset`. docs/storage.md.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Callable

from node.adapters.store import classify
from node.errors import RemoteDataError
from node.reporting.outbox import Outbox

log = logging.getLogger(__name__)


def open_outbox(path: Path, **limits) -> tuple[Outbox, tuple[str, str] | None]:
    """The outbox file, or (medium full, read-only, failing) an in-memory outbox and the fault. A
    damaged file is already handled by Outbox itself (moved aside, outbox_reset)."""
    try:
        outbox = Outbox(path, **limits)
        try:
            outbox.probe_write()  # a full medium opens fine and fails at the first commit
        except BaseException:
            outbox.close()
            raise
        return outbox, None
    except (sqlite3.Error, OSError) as exc:
        log.error("outbox %s unusable (%s): records are kept in memory until it works again", path, exc)
        return Outbox(":memory:", **limits), (classify(exc, path), str(exc)[:200])


def restore_documents(store, trust, limits) -> list[str]:
    """After a rebuild (or next to an older state.db) the safe copy may hold a newer schedule or config
    envelope than the database: verify its signatures again under the trust in force, then keep it."""
    from node.trust.commands import parse_command
    from node.trust.envelope import parse_envelope
    from node.trust.verifier import _crypto_signers, required_roles

    restored = []
    for kind in ("schedule", "config"):
        copied = store.copied_document(kind)
        stored = store.document(kind)
        if copied is None or (stored is not None and stored[0] >= copied[0]):
            continue
        version, envelope = copied
        try:
            parsed = parse_envelope(envelope, max_bytes=limits.max_envelope_bytes,
                                    max_signatures=limits.max_signatures)
            signers, _ = _crypto_signers(parsed, trust.document)
            command = parse_command(parsed.payload, limits)
            enough = command.type == kind and command.version == version and all(
                len([k for k in signers.values() if role in k.roles]) >= threshold
                for role, threshold in required_roles(command, trust.document))
        except (RemoteDataError, ValueError, TypeError, KeyError) as exc:
            log.error("safe copy of %s version %s does not verify: %s", kind, version, exc)
            continue
        if not enough:
            log.error("safe copy of %s version %s is not signed by keys the trust in force accepts", kind, version)
            continue
        store.store_document(kind, version, envelope)
        restored.append(kind)
        log.warning("%s version %d restored from the safe copy", kind, version)
    return restored


class StorageWatch:
    """Retries degraded stores on a timer; owns the `storage` status field and the alarm's reading."""

    def __init__(self, *, loop, store, outbox: Outbox, outbox_path: Path, outbox_fault, cache,
                 emit_event: Callable[[str, dict], None], trusted_now: Callable[[], object], retry_s: float,
                 pump=None, on_change: Callable[[], None] = lambda: None):
        """pump: the outbox's OutboxPump (its in-flight ids are forgotten when the outbox moves back to
        disk); on_change(): the set of degraded stores changed (urgent heartbeat)."""
        self.loop, self.store, self.outbox, self.outbox_path, self.cache = loop, store, outbox, outbox_path, cache
        self.outbox_fault = outbox_fault
        self.emit_event, self.trusted_now, self.retry_s = emit_event, trusted_now, retry_s
        self.pump = pump
        self.on_change = on_change
        self._timer = None

    def degraded(self) -> list[str]:
        """Which stores are not on disk right now (the status `storage` field)."""
        names = []
        if self.store.degraded:
            names.append("state")
        if self.outbox_fault is not None:
            names.append("outbox")
        if getattr(self.cache, "fault", None) is not None:
            names.append("cache")
        return names

    def start(self) -> None:
        self.store.attach_reporter(self.emit_event)
        if self.outbox_fault is not None:
            reason, detail = self.outbox_fault
            self.emit_event("storage_fault", {"store": "outbox", "reason": reason, "action": "degraded",
                                              "detail": detail or None})
        cache_fault = getattr(self.cache, "fault", None)
        rebuilt = getattr(self.cache, "rebuilt", None)
        if cache_fault is not None:
            self.emit_event("storage_fault", {"store": "cache", "reason": cache_fault[0], "action": "degraded",
                                              "detail": cache_fault[1] or None, **(rebuilt or {})})
        elif rebuilt is not None:
            self.emit_event("storage_fault", {"store": "cache", "reason": "corrupt", "action": "rebuilt",
                                              **rebuilt})
        self._settle_reset()
        self._timer = self.loop.call_later(self.retry_s, self.tick)

    def tick(self) -> None:
        self._timer = self.loop.call_later(self.retry_s, self.tick)  # first: an error below must not stop it
        before = self.degraded()
        if self.store.degraded:
            self.store.try_recover()
        if self.outbox_fault is not None:
            self._recover_outbox()
        cache_fault = getattr(self.cache, "fault", None)
        if cache_fault is not None and self.cache.try_recover():
            self.emit_event("storage_recovered", {"store": "cache", "reason": cache_fault[0]})
        self._settle_reset()
        if self.degraded() != before:
            self.on_change()

    def _recover_outbox(self) -> None:
        if self.pump is not None:
            self.pump.flush()
        try:
            self.outbox.move_rows_to(self.outbox_path)
        except (sqlite3.Error, OSError) as exc:
            log.debug("outbox still in memory: %s", exc)
            return
        if self.pump is not None:
            self.pump.forget_inflight()
        self.outbox.requeue_inflight()
        reason = self.outbox_fault[0]
        self.outbox_fault = None
        log.info("outbox back on disk: %s", self.outbox_path)
        self.emit_event("storage_recovered", {"store": "outbox", "reason": reason})

    def _settle_reset(self) -> None:
        if self.store.get("reset_pending"):
            self.store.reset_epoch(self.trusted_now())

    def close(self) -> None:
        self.loop.cancel(self._timer)
