"""The recorder: builds play records and keeps the playback journal (owned by OnAir).

One play, one record. state.db (the journal) and outbox.db are two SQLite files in WAL mode, and
SQLite makes a transaction atomic across ATTACHed files only in rollback-journal mode, never in WAL
(https://www.sqlite.org/lang_attach.html, https://www.sqlite.org/atomiccommit.html). So a finished
item is ended in ONE state.db transaction that (a) forgets the command, so it is never offered again,
(b) clears or moves the `onair` row, and (c) keeps the record under `rec:<id>`; only then is the record
added to the outbox, and the `rec:<id>` row removed. A power cut at any instant leaves either the
command (nothing sounded to its end: it plays again) or the pending record (stored again under the same
id: the outbox and the district de-duplicate by id), never both and never neither.
"""

from __future__ import annotations

import base64
import hashlib
import logging

from node.playback.arbiter import Level, QueueItem
from node.playback.items import Clip
from node.playback.onair_states import OnAirState
from node.playback.records import PlayRecord, PlayResult
from node.playback.relays import wire_relay_name
from node.service.reporter import STORAGE_ERRORS

log = logging.getLogger(__name__)

RECORD_LEVEL = {Level.EMERGENCY: "emergency", Level.PRIORITY: "priority", Level.NORMAL: "normal",
                Level.SCHEDULED: "normal"}
ONAIR = "onair"
COMMAND_PREFIX = "cmd:"
PENDING_PREFIX = "rec:"
INTERRUPTED = "interrupted_by_restart"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def record_payload(record: PlayRecord, node_id: str, now: float) -> dict:
    """PlayRecord -> node/schemas/play_record.json (relay times as epoch seconds)."""
    return {"v": 1, "id": record.id, "node": node_id, "ts": int(now),
            "kind": "play", "content_id": record.content_id, "sha256": record.sha256, "level": record.level,
            "source": record.source, "command_id": record.command_id, "slot_id": record.slot_id,
            "scheduled_at": record.scheduled_at, "started_at": record.started_at, "ended_at": record.ended_at,
            "seconds": record.seconds_played, "result": record.result.value, "volume": record.volume,
            "relays": [[t, wire_relay_name(name), on] for t, name, on in record.relays][:64],
            "reason": record.failure_reason, "title": record.title}


def derived_id(*parts: object) -> str:
    """A record id fixed by what it records (26 Crockford base32 characters, like outbox.new_id): the
    same interrupted play found twice after two crashes gets the same id, and the district keeps one."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    value = int.from_bytes(digest[:17], "big") >> 6  # 130 bits
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _command_id(item: QueueItem) -> str | None:
    return item.content.command_id


def _slot_id(item: QueueItem) -> str | None:
    return item.item_id if item.content.slot_id else None


class Recorder:
    def __init__(self, *, node_id: str, store, reporter, wall, default_volume):
        """reporter: node.service.reporter.Reporter (the outbox, and the count of failed writes);
        wall(): epoch seconds; default_volume(): the configured volume now (remote settings change it)."""
        self.node_id, self.store, self.reporter, self.wall = node_id, store, reporter, wall
        self.default_volume = default_volume

    # --- records ---------------------------------------------------------------------------------------
    def played(self, item: QueueItem, entry: Clip | None, result: PlayResult, reason: str | None, *,
               started_wall: float | None, seconds: float, relays: list) -> PlayRecord:
        """The record of what one item (or one playlist entry) did on air."""
        now = self.wall()
        volume = entry.volume if entry is not None else getattr(item.content, "volume", None)
        return PlayRecord(
            content_id=entry.content_id if entry else item.content_id, sha256=entry.sha256 if entry else None,
            level=RECORD_LEVEL[item.level], source=item.source, result=result, command_id=_command_id(item),
            slot_id=_slot_id(item), scheduled_at=item.content.scheduled_at, started_at=started_wall,
            ended_at=now if started_wall else None, seconds_played=round(seconds, 3),
            volume=volume if volume is not None else self.default_volume(), relays=relays, failure_reason=reason,
            title=entry.title if entry else None)

    def skipped(self, item: QueueItem, reason: str) -> PlayRecord:
        clip = getattr(item.content, "clip", None)
        return PlayRecord(
            content_id=clip.content_id if clip else item.content_id, sha256=clip.sha256 if clip else None,
            level=RECORD_LEVEL[item.level], source=item.source, result=PlayResult.SKIPPED,
            command_id=_command_id(item), slot_id=_slot_id(item), scheduled_at=item.content.scheduled_at,
            volume=clip.volume if clip else None, failure_reason=reason, title=clip.title if clip else None)

    def interrupted(self, row: dict) -> PlayRecord:
        """What aired of the item a crash or power cut cut: the clip on air, its sha256, the seconds
        up to the last progress mark and that mark as the end time (none when it was never heard)."""
        item = QueueItem.from_dict(row["item"])
        entry = Clip.from_dict(row["entry"]) if row.get("entry") else getattr(item.content, "clip", None)
        started = row.get("entry_started")
        aired_until = row.get("aired_until") or started
        seconds = max(0.0, aired_until - started) if started is not None and aired_until is not None else 0.0
        if entry is not None and entry.duration:
            seconds = min(seconds, entry.duration)
        volume = entry.volume if entry is not None else getattr(item.content, "volume", None)
        return PlayRecord(
            content_id=entry.content_id if entry else item.content_id, sha256=entry.sha256 if entry else None,
            level=RECORD_LEVEL[item.level], source=item.source, result=PlayResult.FAILED,
            command_id=_command_id(item), slot_id=_slot_id(item), scheduled_at=item.content.scheduled_at,
            started_at=started, ended_at=aired_until if started is not None else None,
            seconds_played=round(seconds, 3), volume=volume if volume is not None else self.default_volume(),
            failure_reason=INTERRUPTED, title=entry.title if entry else None,
            id=derived_id(self.node_id, item.item_id, row.get("entry_index"), started, row.get("since")))

    def expired_command(self, command) -> PlayRecord:
        content = getattr(command.body, "content", None)
        return PlayRecord(
            content_id=content.content_id if content else f"live:{command.id}",
            sha256=content.sha256 if content else None, level=command.level or "normal",
            source="command" if command.type == "play" else "live", result=PlayResult.SKIPPED,
            command_id=command.id, failure_reason="expired", id=derived_id(self.node_id, command.id, "expired"))

    # --- the journal -----------------------------------------------------------------------------------
    def enter(self, state: OnAirState, item: QueueItem, since: float, **detail) -> None:
        """The item on air and its state, written before the state is entered (docs/playback.md)."""
        self._apply({ONAIR: {"state": state.value, "item": item.to_dict(), "since": since, **detail}})

    def commit(self, record: PlayRecord, *, forget_command: str | None = None, clear_onair: bool = False,
               onair: dict | None = None) -> None:
        """Store one record exactly once (see the module docstring for the order and why)."""
        payload = record_payload(record, self.node_id, self.wall())
        key = PENDING_PREFIX + record.id
        changes: dict[str, dict | None] = {key: {"payload": payload}}
        if forget_command:
            changes[COMMAND_PREFIX + forget_command] = None
        if clear_onair:
            changes[ONAIR] = None
        if onair is not None:
            changes[ONAIR] = onair
        stored = self._apply(changes)
        self.reporter.add("play", payload)
        if stored:
            self._apply({key: None})

    def end_silently(self, *, forget_command: str | None) -> None:
        """An item that leaves no record of its own (a playlist whose entries are recorded): the journal
        forgets it, and its command, in one transaction."""
        changes: dict[str, dict | None] = {ONAIR: None}
        if forget_command:
            changes[COMMAND_PREFIX + forget_command] = None
        self._apply(changes)

    def forget_command(self, command_id: str) -> None:
        self._apply({COMMAND_PREFIX + command_id: None})

    def clear_onair(self) -> None:
        self._apply({ONAIR: None})

    def onair_row(self) -> dict | None:
        return self.store.journal_get(ONAIR)

    def commands(self) -> list[tuple[str, bytes]]:
        """Journalled accepted play/live commands: (command id, signed envelope)."""
        rows = []
        for slot, data in self.store.journal_items(COMMAND_PREFIX):
            try:
                rows.append((slot[len(COMMAND_PREFIX):], base64.b64decode(data["envelope"])))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("dropping unreadable journal entry %s: %s", slot, exc)
                self._apply({slot: None})
        return rows

    def store_pending(self) -> int:
        """Records whose item ended but which may not have reached the outbox: store them (same id)."""
        pending = self.store.journal_items(PENDING_PREFIX)
        for slot, data in pending:
            self.reporter.add("play", data["payload"])
            self._apply({slot: None})
        return len(pending)

    def _apply(self, changes: dict[str, dict | None]) -> bool:
        """One journal transaction; False when storage refused it (disk full, read-only, I/O error):
        the node keeps playing from memory and the failure is counted and reported."""
        try:
            self.store.journal_apply(changes)
        except STORAGE_ERRORS as exc:  # disk full, read-only, I/O error: never leave an item stuck on air
            log.error("journal: could not store %s: %s", ", ".join(changes), exc)
            self.reporter.storage_error("journal", exc)
            return False
        self.reporter.storage_ok("journal")
        return True

