"""Proof of play and crash recovery (part of OnAir, split out to keep modules readable).

Every item leaves exactly one record per piece of content it played or failed to play; records go to
the outbox (persisted before they are reported). After kill -9 or a power cut, the journal says what
was on air and which accepted commands still wait to be played.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING

from node.playback.arbiter import Level, QueueItem
from node.playback.records import PlayRecord, PlayResult

if TYPE_CHECKING:
    from node.service.onair import Playing

log = logging.getLogger(__name__)

RECORD_LEVEL = {Level.EMERGENCY: "emergency", Level.PRIORITY: "priority", Level.NORMAL: "normal",
                Level.SCHEDULED: "normal"}


class RecordsMixin:
    def _write_record(self, on: Playing, result: PlayResult, reason: str | None) -> None:
        entry = on.entry or on.item.content.get("entry") or {}
        now_wall = self._wall()
        seconds = 0.0
        if on.started_mono is not None:
            seconds = max(0.0, self.clock.monotonic() - on.started_mono)
        if result is PlayResult.COMPLETED and on.started_mono is None:
            result, reason = PlayResult.FAILED, "no_audio"
        record = PlayRecord(
            content_id=entry.get("content_id") or on.item.content_id, sha256=entry.get("sha256"),
            level=RECORD_LEVEL[on.item.level], source=on.item.source, result=result,
            command_id=on.item.content.get("command_id"), slot_id=on.item.content.get("slot_id") and on.item.item_id,
            scheduled_at=on.item.content.get("start_at") or on.item.content.get("starts_at"),
            started_at=on.started_wall, ended_at=now_wall if on.started_wall else None,
            seconds_played=round(seconds, 3),
            volume=entry["volume"] if entry.get("volume") is not None else self.cfg.audio.default_volume,
            relays=[(round(t, 3), name, state) for t, name, state in self.relay_log
                    if on.started_wall is None or t >= on.started_wall - self.cfg.relays.warmup - 1],
            failure_reason=reason, title=entry.get("title"))
        if result is PlayResult.FAILED:
            self.failed_to_sound = reason
            self.emit_event("failed_to_sound", {"content_id": record.content_id, "reason": reason})
        elif result is PlayResult.COMPLETED:
            self.failed_to_sound = None
        self.emit_record(record)
        self.relay_log = self.relay_log[-32:]
        on.started_mono = on.started_wall = None

    def _record_skip(self, item: QueueItem, reason: str) -> None:
        entry = item.content.get("entry") or {}
        self.emit_record(PlayRecord(
            content_id=entry.get("content_id") or item.content_id, sha256=entry.get("sha256"),
            level=RECORD_LEVEL[item.level], source=item.source, result=PlayResult.SKIPPED,
            command_id=item.content.get("command_id"), slot_id=item.content.get("slot_id") and item.item_id,
            scheduled_at=item.content.get("start_at") or item.content.get("starts_at"),
            volume=entry.get("volume"), failure_reason=reason, title=entry.get("title")))
        if item.content.get("command_id"):
            self.store.journal_set(f"cmd:{item.item_id}", None)

    # --- crash recovery --------------------------------------------------------------------------
    def _recover_after_crash(self) -> None:
        """After kill -9 or a power cut: record the interrupted item, then re-offer accepted commands
        that have not played yet (and are still valid)."""
        interrupted = self.store.journal_get("onair")
        if interrupted:
            item = QueueItem.from_dict(interrupted["item"])
            entry = item.content.get("entry") or {}
            self.emit_record(PlayRecord(
                content_id=entry.get("content_id") or item.content_id, sha256=entry.get("sha256"),
                level=RECORD_LEVEL[item.level], source=item.source, result=PlayResult.FAILED,
                command_id=item.content.get("command_id"), slot_id=item.content.get("slot_id") and item.item_id,
                scheduled_at=item.content.get("start_at") or item.content.get("starts_at"),
                started_at=interrupted.get("since"), failure_reason="interrupted_by_restart"))
            self.emit_event("interrupted", {"item": item.item_id})
            self.store.journal_set("onair", None)
        self._recover_commands()

    def _recover_commands(self) -> None:
        """Accepted play/live commands that have not been recorded yet: offer them again if still valid.
        Without trusted time (a Pi after a power cut, before NTP) nothing is decided: the rows wait."""
        now = self.now_trusted()
        self._recovery_pending = now is None
        if now is None:
            return
        for slot, data in self.store.journal_items("cmd:"):
            try:
                envelope = base64.b64decode(data["envelope"])
                _, command = self._parse(envelope, ("play", "live"), "journal", slot.removeprefix("cmd:"))
            except Exception as exc:  # noqa: BLE001 - a damaged journal row must not block start-up
                # A row that no longer verifies was reported (stored_envelope_refused) by read_stored.
                log.error("dropping unusable journal entry %s: %s", slot, exc)
                self.store.journal_set(slot, None)
                continue
            if now >= command.expires:
                self.emit_record(PlayRecord(
                    content_id=getattr(command.body, "content", None) and command.body.content.content_id
                    or f"live:{command.id}", sha256=None, level=command.level or "normal",
                    source="command" if command.type == "play" else "live", result=PlayResult.SKIPPED,
                    command_id=command.id, failure_reason="expired"))
                self.store.journal_set(slot, None)
                continue
            if command.type == "play":
                self.on_play(command, envelope)
            else:
                self.on_live(command)

