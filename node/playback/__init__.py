"""Playback: what plays now (arbiter), relay timing (sequencer), schedule expansion, play records —
all pure — and the adapters at the edge: node.playback.player (libVLC + FakePlayer) and
node.playback.relays (gpiozero). Adapters are not imported here so the pure core loads without
libVLC or GPIO libraries. See docs/playback.md.
"""

from node.playback.arbiter import Action, Arbiter, Dropped, Level, QueueDecision, QueueItem
from node.playback.records import PlayRecord, PlayResult, judge_failure
from node.playback.schedule import Occurrence, active_at, expand, needed_content, position_in_slot
from node.playback.sequencer import RelayPhase, RelaySequencer

__all__ = [
    "Action", "Arbiter", "QueueDecision", "Dropped", "Level", "QueueItem",
    "PlayRecord", "PlayResult", "judge_failure",
    "Occurrence", "active_at", "expand", "needed_content", "position_in_slot",
    "RelayPhase", "RelaySequencer",
]
