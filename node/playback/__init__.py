"""Playback: what plays now (arbiter), relay timing (sequencer), schedule expansion, the on-air state
machine, typed queue items, play records — all pure — and the adapters at the edge:
node.playback.player (libVLC + FakePlayer) and node.playback.relays (gpiozero). Adapters are not
imported here so the pure core loads without libVLC or GPIO libraries. See docs/playback.md.
"""

from node.playback.arbiter import Action, Arbiter, Dropped, Level, QueueDecision, QueueItem
from node.playback.onair_states import OnAirState, Trigger, judge
from node.playback.records import PlayRecord, PlayResult
from node.playback.schedule import Occurrence, active_at, expand, needed_content, position_in_slot
from node.playback.sequencer import RelayPhase, RelaySequencer

__all__ = [
    "Action", "Arbiter", "QueueDecision", "Dropped", "Level", "QueueItem",
    "OnAirState", "Trigger", "judge", "PlayRecord", "PlayResult",
    "Occurrence", "active_at", "expand", "needed_content", "position_in_slot",
    "RelayPhase", "RelaySequencer",
]
