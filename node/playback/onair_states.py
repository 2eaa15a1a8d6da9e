"""The item on air as one explicit state machine: named states, one transition table, one resume table.

Pure: no IO, no clock, no threads. `node.service.onair.OnAir` performs the effects (relays, player,
records) and moves through `step()`; a move the table does not allow raises `IllegalTransition`, so a
wrong sequence is a visible bug, not a silently stuck node. docs/playback.md shows the same tables.

Persisted: the journal's `onair` row carries the state (written before the state is entered for
WARMING and SOUNDING), and a finished item's record waits in a `rec:<id>` row written in the same
transaction that forgets the command. RESUME says what start-up does with each persisted state.
"""

from __future__ import annotations

import enum

from node.playback.records import FAIL_AMP_FAULT, FAIL_NO_AUDIO, FAIL_RELAY_FEEDBACK, PlayResult


class OnAirState(enum.Enum):
    IDLE = "idle"                   # nothing on air (the relays may still be in their tail or idle hold)
    WARMING = "warming"             # item chosen; the relays are warming up (or waiting for min_off)
    CUED = "cued"                   # relays ready; waiting for the signed start instant (start_at/starts_at)
    STARTING = "starting"           # the player was asked to play; nothing heard yet
    SOUNDING = "sounding"           # the player reports audio
    GAP = "gap"                     # programme: this playlist entry cannot play; the next one at its time
    RECONNECTING = "reconnecting"   # live relay: the stream dropped; retried within its grace
    ENDING = "ending"               # result decided; its record is pending (journal rec:<id>)


class Trigger(enum.Enum):
    OFFERED = "offered"             # the arbiter chose an item
    CUE = "cue"                     # the relay sequencer said ready_to_play
    START = "start"                 # start media: at the instant, the next playlist entry, a stream retry
    HEARD = "heard"                 # player event "playing"
    ENTRY_MISSING = "entry_missing"  # a playlist entry is not in the cache or the player refused it
    STREAM_DROPPED = "stream_dropped"  # a live stream ended or failed before its end time
    END = "end"                     # completed, failed, stopped, preempted, slot end, shutdown
    RECORDED = "recorded"           # the record is stored (outbox) and the journal cleared


S, T = OnAirState, Trigger
TRANSITIONS: dict[tuple[OnAirState, Trigger], OnAirState] = {
    (S.IDLE, T.OFFERED): S.WARMING,
    (S.WARMING, T.CUE): S.CUED,
    (S.WARMING, T.END): S.ENDING,
    (S.CUED, T.START): S.STARTING,
    (S.CUED, T.END): S.ENDING,
    (S.STARTING, T.HEARD): S.SOUNDING,
    (S.STARTING, T.START): S.STARTING,           # programme: an entry failed before it sounded -> the next
    (S.STARTING, T.ENTRY_MISSING): S.GAP,
    (S.STARTING, T.STREAM_DROPPED): S.RECONNECTING,
    (S.STARTING, T.END): S.ENDING,
    (S.SOUNDING, T.HEARD): S.SOUNDING,
    (S.SOUNDING, T.START): S.STARTING,           # programme: the next playlist entry
    (S.SOUNDING, T.STREAM_DROPPED): S.RECONNECTING,
    (S.SOUNDING, T.END): S.ENDING,
    (S.GAP, T.START): S.STARTING,
    (S.GAP, T.END): S.ENDING,
    (S.RECONNECTING, T.START): S.STARTING,
    (S.RECONNECTING, T.STREAM_DROPPED): S.RECONNECTING,
    (S.RECONNECTING, T.END): S.ENDING,
    (S.ENDING, T.RECORDED): S.IDLE,
}


class IllegalTransition(RuntimeError):
    """A trigger the table does not allow in this state: a bug in the controller, never bad input."""


def step(state: OnAirState, trigger: Trigger) -> OnAirState:
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransition(f"{trigger.value} in state {state.value}") from None


class Resume(enum.Enum):
    NOTHING = "nothing"             # nothing was on air
    OFFER_AGAIN = "offer_again"     # nothing sounded: the journalled command (or the slot) is offered again
    RECORD_INTERRUPTED = "record_interrupted"  # it sounded (or may have): record what aired, then offer again
    STORE_PENDING = "store_pending"  # the record waits in the journal: store it (same id), never replay


# Persisted state -> what start-up does after kill -9 or a power cut (docs/playback.md).
RESUME: dict[OnAirState, Resume] = {
    S.IDLE: Resume.NOTHING,
    S.WARMING: Resume.OFFER_AGAIN,
    S.CUED: Resume.OFFER_AGAIN,
    S.STARTING: Resume.RECORD_INTERRUPTED,  # the player had it: some of it may have sounded
    S.GAP: Resume.OFFER_AGAIN,
    S.SOUNDING: Resume.RECORD_INTERRUPTED,
    S.RECONNECTING: Resume.RECORD_INTERRUPTED,
    S.ENDING: Resume.STORE_PENDING,
}


# How long past its own expected end a state may last before on-air counts as stuck (the watchdog then
# stops pinging and systemd restarts the node, which resumes by RESUME). Generous: a stream server may be
# slow to answer; a stuck item is the fault being caught, not a slow one.
STUCK_MARGIN_S = 60.0


def overdue_after(state: OnAirState, *, warmup: float, min_off: float, media_seconds: float) -> float:
    """Seconds from entering `state` after which it is overdue. media_seconds: the clip's length, the
    time to the start instant (CUED) or to a live relay's end."""
    if state is S.WARMING:
        return min_off + warmup + STUCK_MARGIN_S
    if state in (S.CUED, S.SOUNDING, S.GAP):
        return media_seconds + STUCK_MARGIN_S
    return STUCK_MARGIN_S  # STARTING, RECONNECTING (retried every few seconds), ENDING (transient)


def judge(event_kind: str, detail: str, *, amp_fault_seen: bool, amp_fault_now: bool,
          relay_feedback: bool | None) -> tuple[PlayResult, str | None]:
    """How an item that the player ended (event "ended" or "error") went: (result, failure reason).

    First match wins (docs/playback.md "Failure to sound"): a player error (no_audio when the input had
    nothing decodable), an amplifier fault seen at any time while it played, relay feedback saying the
    relays did not close; otherwise it completed. relay_feedback None: no feedback input is wired."""
    if event_kind == "error":
        return PlayResult.FAILED, FAIL_NO_AUDIO if detail == FAIL_NO_AUDIO else f"player_error:{detail}"
    if amp_fault_seen or amp_fault_now:
        return PlayResult.FAILED, FAIL_AMP_FAULT
    if relay_feedback is False:
        return PlayResult.FAILED, FAIL_RELAY_FEEDBACK
    return PlayResult.COMPLETED, None
