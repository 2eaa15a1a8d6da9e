"""Proof-of-play records (royalty reporting and "did it really sound?").

The judge that decides a failure is node.playback.onair_states.judge; the daemon's JSON form is
node.service.recorder.record_payload."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field


class PlayResult(enum.Enum):
    COMPLETED = "completed"  # played to its end and sounded
    PREEMPTED = "preempted"  # cut by a higher-level item (it may come back: a new record then)
    STOPPED = "stopped"      # a stop command (or shutdown) ended it
    FAILED = "failed"        # started but did not sound: see failure_reason
    SKIPPED = "skipped"      # never started: expired in the queue, queue full, stopped while queued


# Stable failure reasons (reported to the district; never rename).
FAIL_PLAYER_ERROR = "player_error"
FAIL_NO_AUDIO = "no_audio"
FAIL_AMP_FAULT = "amp_fault"
FAIL_RELAY_FEEDBACK = "relay_feedback_mismatch"


@dataclass
class PlayRecord:
    content_id: str
    sha256: str | None  # None for a live relay
    level: str
    source: str  # "command" | "schedule" | "live"
    result: PlayResult
    command_id: str | None = None  # for source "command"
    slot_id: str | None = None  # for source "schedule"/"live" (occurrence id)
    scheduled_at: float | None = None  # epoch seconds
    started_at: float | None = None  # epoch seconds, None when skipped
    ended_at: float | None = None
    seconds_played: float = 0.0
    volume: int | None = None
    relays: list[tuple[float, str, bool]] = field(default_factory=list)  # (seconds from start, name, on)
    failure_reason: str | None = None
    title: str | None = None  # the signed content item's title, for the district's royalty report
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
