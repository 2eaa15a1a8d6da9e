"""Relay timing as a pure state machine: no sleeps, no GPIO. The loop feeds it times and performs the
actions it returns, in order.

    request ──► [min_off wait] ──► amp on ──warmup──► zones on, ready_to_play ──► (playing)
    finished ──tail──► zones off ──idle_hold──► amp off ──► OFF (min_off before the next amp on)

A request while the amplifier is still on (tail or idle hold) skips the warm-up and the min_off wait,
so back-to-back items never make the amplifier relay chatter. Emergencies use the same sequence: the
warm-up protects the amplifier and horns, and 2 s is small against a bulletin (docs/playback.md).

Actions (plain tuples, performed in order by the loop):
    ("amp", on: bool)
    ("zones", names: list[str] | None, on: bool)     names None = every zone
    ("ready_to_play",)                                 start the player now
"""

from __future__ import annotations

import enum

ZoneSet = tuple[str, ...] | None  # None = every zone


class RelayPhase(enum.Enum):
    OFF = "off"                # amp off; may switch on at once if min_off has passed
    WAITING = "waiting"        # a request waits for min_off to pass
    WARMING = "warming"        # amp on, zones off, waiting for warm-up
    PLAYING = "playing"        # amp and zones on, the player runs
    TAIL = "tail"              # playback finished, zones still on for the tail
    HOLD = "hold"              # zones off, amp on for idle_hold in case another item comes


class RelaySequencer:
    def __init__(self, warmup: float = 2.0, tail: float = 1.0, idle_hold: float = 30.0, min_off: float = 5.0):
        timing = {"warmup": warmup, "tail": tail, "idle_hold": idle_hold, "min_off": min_off}
        for name, value in timing.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.warmup, self.tail, self.idle_hold, self.min_off = warmup, tail, idle_hold, min_off
        self.phase = RelayPhase.OFF
        self._deadline: float | None = None
        self._off_since: float | None = None  # None = never switched on: no min_off to honour
        self._zones_on: ZoneSet | bool = False  # False = no zone on; None = all; tuple = those zones
        self._wanted: ZoneSet = None

    # -- inputs --

    def request_play(self, now: float, zones: list[str] | None = None) -> list[tuple]:
        """The loop wants to play an item on `zones` (None = all). "ready_to_play" comes now or from a
        later tick(); a new request replaces a pending one's zones."""
        wanted = None if zones is None else tuple(zones)
        self._wanted = wanted
        phase = self.phase
        if phase is RelayPhase.OFF:
            if self._off_since is not None and now < self._off_since + self.min_off:
                self._enter(RelayPhase.WAITING, self._off_since + self.min_off)
                return []
            return self._amp_on(now) + self.tick(now)
        if phase in (RelayPhase.WAITING, RelayPhase.WARMING):
            return self.tick(now)
        # PLAYING (the loop replaced the item), TAIL or HOLD: the amp is on and warm.
        actions = self._switch_zones(wanted)
        self._enter(RelayPhase.PLAYING, None)
        return actions + [("ready_to_play",)]

    def playback_finished(self, now: float) -> list[tuple]:
        """The item ended or was stopped and nothing follows at once. Before ready_to_play this
        cancels the request."""
        if self.phase is RelayPhase.PLAYING:
            self._enter(RelayPhase.TAIL, now + self.tail)
        elif self.phase is RelayPhase.WARMING:
            self._enter(RelayPhase.HOLD, now + self.idle_hold)
        elif self.phase is RelayPhase.WAITING:
            self._enter(RelayPhase.OFF, None)
        return self.tick(now)

    def tick(self, now: float) -> list[tuple]:
        """Advance through every deadline that has passed."""
        actions: list[tuple] = []
        while self._deadline is not None and now >= self._deadline:
            at = self._deadline
            if self.phase is RelayPhase.WAITING:
                actions += self._amp_on(at)
            elif self.phase is RelayPhase.WARMING:
                actions += self._switch_zones(self._wanted)
                actions.append(("ready_to_play",))
                self._enter(RelayPhase.PLAYING, None)
            elif self.phase is RelayPhase.TAIL:
                actions += self._switch_zones(False)
                self._enter(RelayPhase.HOLD, at + self.idle_hold)
            elif self.phase is RelayPhase.HOLD:
                actions.append(("amp", False))
                self._off_since = at
                self._enter(RelayPhase.OFF, None)
        return actions

    def force_off(self, now: float) -> list[tuple]:
        """Everything off at once (stop-all, shutdown, amp fault). min_off starts now."""
        actions = self._switch_zones(False)
        if self.phase not in (RelayPhase.OFF, RelayPhase.WAITING):
            actions.append(("amp", False))
            self._off_since = now
        self._enter(RelayPhase.OFF, None)
        return actions

    # -- outputs --

    def next_deadline(self) -> float | None:
        """When tick() must next be called (None = only on the next input)."""
        return self._deadline

    @property
    def amp_on(self) -> bool:
        return self.phase in (RelayPhase.WARMING, RelayPhase.PLAYING, RelayPhase.TAIL, RelayPhase.HOLD)

    def snapshot(self) -> dict:
        return {"phase": self.phase.value, "deadline": self._deadline, "off_since": self._off_since,
                "zones_on": self._zones_on if self._zones_on is False or self._zones_on is None
                else list(self._zones_on)}

    # -- internals --

    def _enter(self, phase: RelayPhase, deadline: float | None) -> None:
        self.phase, self._deadline = phase, deadline

    def _amp_on(self, now: float) -> list[tuple]:
        self._enter(RelayPhase.WARMING, now + self.warmup)
        return [("amp", True)]

    def _switch_zones(self, wanted: ZoneSet | bool) -> list[tuple]:
        if wanted == self._zones_on and (wanted is None) == (self._zones_on is None):
            return []
        actions = []
        if self._zones_on is not False:
            actions.append(("zones", None, False))
        if wanted is not False:
            actions.append(("zones", None if wanted is None else list(wanted), True))
        self._zones_on = wanted
        return actions
