"""What plays now: a pure queue-and-preemption state machine. No IO, no clock: every call takes `now`.

The loop calls offer() for each accepted command / slot start, on_finished() when the player reports
the end of the current item, next() to pick the following item, stop() for stop commands and expire()
on its timer. Items that leave without finishing are returned as `Dropped` so the loop can write a play
record for each (royalty reporting needs the skipped ones too).

The rules live in two tables that the code uses directly (docs/playback.md shows the same tables):
PREEMPTS (which running levels a new item cuts) and ON_PREEMPTED (what happens to the cut item).
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from node.playback.items import content_from_dict

CONTENT_KINDS = ("clip", "live", "slot")


class Level(enum.Enum):
    EMERGENCY = "emergency"
    PRIORITY = "priority"
    NORMAL = "normal"        # bulletin sent by command
    SCHEDULED = "scheduled"  # programme slot from the schedule (same rank as NORMAL: first come first)


RANK = {Level.EMERGENCY: 4, Level.PRIORITY: 3, Level.NORMAL: 2, Level.SCHEDULED: 2}

# A new item of level K cuts the running item when the running item's level is in PREEMPTS[K].
# Priority "plays first in the programme": it jumps the queue but waits for a running bulletin.
PREEMPTS: dict[Level, frozenset[Level]] = {
    Level.EMERGENCY: frozenset(Level),  # including a running emergency: newest warning first
    Level.PRIORITY: frozenset(),
    Level.NORMAL: frozenset(),
    Level.SCHEDULED: frozenset(),
}

# What happens to a cut item, by its level:
#   "resume"  re-queued at the head of its rank, to continue from where it was cut (if not expired)
#   "restart" re-queued at the head of its rank, to play again from the start (if not expired)
#   "drop"    not played again (record: preempted)
ON_PREEMPTED: dict[Level, str] = {
    Level.EMERGENCY: "restart",  # plays again, right after the emergency that cut it
    Level.PRIORITY: "restart",
    Level.NORMAL: "restart",     # a bulletin heard from the middle makes no sense
    Level.SCHEDULED: "resume",   # programme or live relay: rejoin where it was
}


class Action(enum.Enum):
    PLAY_NOW = "play_now"
    QUEUED = "queued"
    REJECTED = "rejected"
    DROPPED = "dropped"


@dataclass(frozen=True)
class QueueItem:
    """One thing to play. `content` is opaque to the arbiter: on the node a node.playback.items class
    (Bulletin, Live, Slot); it must round-trip through JSON for snapshot(). Times are in the loop's
    `now` domain."""

    item_id: str
    level: Level
    source: str  # "command" | "schedule" | "live"
    content: Any
    enqueued_at: float
    expires_at: float | None = None  # not started (or resumed) by then -> dropped as "skipped"
    duration: float | None = None
    resume_ok: bool = True  # False: a "resume" item restarts from 0 (e.g. no seekable media)
    content_id: str = ""
    start_at: float = 0.0  # seconds into the media where playing starts (set when resumed)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["level"] = self.level.value
        # Typed content (node.playback.items) knows its own JSON form; anything else must already be JSON.
        data["content"] = self.content.to_dict() if hasattr(self.content, "to_dict") else self.content
        return data

    @classmethod
    def from_dict(cls, data: dict) -> QueueItem:
        content = data.get("content")
        if isinstance(content, dict) and content.get("kind") in CONTENT_KINDS:
            content = content_from_dict(content)
        return cls(**{**data, "level": Level(data["level"]), "content": content})


@dataclass(frozen=True)
class Dropped:
    """An item that left without playing to its end. result: a records.PlayResult value."""

    item: QueueItem
    result: str  # "skipped" (not playing when it left) | "stopped" (was playing)
    reason: str  # "expired" | "queue_full" | "stop_command"
    was_current: bool = False  # the player must be stopped for it


@dataclass(frozen=True)
class QueueDecision:
    action: Action
    item_id: str
    reason: str = ""  # for REJECTED/DROPPED: "queue_full" | "expired" | "duplicate"
    # item_id cut by this PLAY_NOW: the loop stops the player first and writes ONE "preempted" record
    # for the part that played. preempted_fate says whether it comes back: "resume" | "restart" |
    # "drop" (test sound, expired, or no room left in the queue). It is never also in `dropped`.
    preempted: str | None = None
    preempted_fate: str | None = None
    dropped: list[Dropped] = field(default_factory=list)


class Arbiter:
    def __init__(self, max_queue: int = 32):
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.max_queue = max_queue
        self.current: QueueItem | None = None
        self._queue: list[tuple[int, int, QueueItem]] = []  # (-rank, order, item), kept sorted
        self._order = itertools.count()
        self._head = itertools.count(-1, -1)  # re-queued items go before everything of their rank

    # -- inputs --

    def offer(self, item: QueueItem, now: float, current_position: float = 0.0) -> QueueDecision:
        """A new item. `current_position` = player.position() of the running item, read before
        deciding so a resumed programme continues at the right place."""
        if self._known(item.item_id):
            return QueueDecision(Action.REJECTED, item.item_id, reason="duplicate")
        if _expired(item, now):
            return QueueDecision(Action.DROPPED, item.item_id, reason="expired",
                            dropped=[Dropped(item, "skipped", "expired")])
        dropped = self.expire(now)
        current = self.current
        if current is None:
            self.current = item
            return QueueDecision(Action.PLAY_NOW, item.item_id, dropped=dropped)
        if current.level in PREEMPTS[item.level]:
            self.current = item
            fate, evicted = self._requeue_preempted(current, ON_PREEMPTED[current.level], now,
                                                    current_position)
            dropped += evicted
            return QueueDecision(Action.PLAY_NOW, item.item_id, preempted=current.item_id,
                            preempted_fate=fate, dropped=dropped)
        made_room = self._make_room(item)
        if made_room is None:   # nothing expired just now: an expiry would have made room
            return QueueDecision(Action.REJECTED, item.item_id, reason="queue_full")
        self._insert(item, next(self._order))
        return QueueDecision(Action.QUEUED, item.item_id, dropped=dropped + made_room)

    def on_finished(self, item_id: str, result: str, now: float) -> bool:
        """The player ended the current item (completed / failed). Returns False when `item_id` is
        not current (a late event for an item already preempted or stopped): nothing changes."""
        if self.current is None or self.current.item_id != item_id:
            return False
        self.current = None
        return True

    def next(self, now: float) -> tuple[QueueItem | None, list[Dropped]]:
        """Pick the next item when nothing plays. Returns (item to play or None, expired items)."""
        dropped = self.expire(now)
        if self.current is not None or not self._queue:
            return None, dropped
        _, _, item = self._queue.pop(0)
        self.current = item
        return item, dropped

    def stop(self, now: float, *, content_id: str | None = None, level: Level | None = None,
             all: bool = False, spare: Level | None = None) -> list[Dropped]:  # noqa: A002
        """Stop matching items, queued and current. Matches item_id or content_id, or a whole level,
        or everything; items of level `spare` are never matched (a stop whose signer may not cancel
        emergencies). A Dropped with was_current=True means the loop must stop the player."""
        if not (all or content_id or level):
            raise ValueError("stop needs content_id, level or all=True")

        def matches(item: QueueItem) -> bool:
            if item.level is spare:
                return False
            return all or item.level is level or (content_id is not None and content_id in
                                                 (item.content_id, item.item_id))

        dropped = [Dropped(item, "skipped", "stop_command") for _, _, item in self._queue if matches(item)]
        self._queue = [entry for entry in self._queue if not matches(entry[2])]
        if self.current is not None and matches(self.current):
            dropped.insert(0, Dropped(self.current, "stopped", "stop_command", was_current=True))
            self.current = None
        return dropped

    def expire(self, now: float) -> list[Dropped]:
        """Drop queued items whose expires_at has passed (record: skipped)."""
        gone = [item for _, _, item in self._queue if _expired(item, now)]
        if gone:
            self._queue = [entry for entry in self._queue if not _expired(entry[2], now)]
        return [Dropped(item, "skipped", "expired") for item in gone]

    # -- outputs --

    @property
    def queued(self) -> list[QueueItem]:
        return [item for _, _, item in self._queue]

    def next_deadline(self) -> float | None:
        """Earliest expires_at among queued items (when expire() has work)."""
        times = [item.expires_at for _, _, item in self._queue if item.expires_at is not None]
        return min(times) if times else None

    def snapshot(self) -> dict:
        """JSON-serialisable state; restore() rebuilds an equal arbiter after a restart."""
        return {"max_queue": self.max_queue,
                "current": self.current.to_dict() if self.current else None,
                "queue": [item.to_dict() for _, _, item in self._queue]}

    @classmethod
    def restore(cls, snapshot: dict) -> Arbiter:
        arbiter = cls(snapshot.get("max_queue", 32))
        if snapshot.get("current"):
            arbiter.current = QueueItem.from_dict(snapshot["current"])
        for data in snapshot.get("queue", []):
            arbiter._insert(QueueItem.from_dict(data), next(arbiter._order))
        return arbiter

    # -- internals --

    def _known(self, item_id: str) -> bool:
        return (self.current is not None and self.current.item_id == item_id) or any(
            item.item_id == item_id for _, _, item in self._queue)

    def _insert(self, item: QueueItem, order: int) -> None:
        self._queue.append((-RANK[item.level], order, item))
        self._queue.sort()   # orders are unique (two counters, one up from 0, one down from -1): items never compared

    def _make_room(self, item: QueueItem) -> list[Dropped] | None:
        """[] if there is room; [evicted] if a lower-ranked queued item made room; None if full."""
        if len(self._queue) < self.max_queue:
            return []
        # The queue is sorted by (-rank, order): its last entry is the lowest-ranked, latest item.
        if -self._queue[-1][0] >= RANK[item.level]:
            return None
        _, _, victim = self._queue.pop()
        return [Dropped(victim, "skipped", "queue_full")]

    def _requeue_preempted(self, item: QueueItem, fate: str, now: float,
                           position: float) -> tuple[str, list[Dropped]]:
        """Returns (actual fate, items evicted to make room for it)."""
        if fate == "drop" or _expired(item, now):
            return "drop", []
        start = position if fate == "resume" and item.resume_ok else 0.0
        again = replace(item, start_at=start)
        made_room = self._make_room(again)
        if made_room is None:
            return "drop", []
        self._insert(again, next(self._head))
        return fate, made_room


def _expired(item: QueueItem, now: float) -> bool:
    return item.expires_at is not None and now >= item.expires_at
