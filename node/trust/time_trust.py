"""Clock trust: which time the verifier may believe. Pure: the adapters feed readings in.

A Raspberry Pi has no RTC (the Pi 5 and DS3231 boards do): it boots at 1970 or wherever fake-hwclock
left it, and NTP over 4G may be late, blocked or spoofed. Believing a wrong clock is how expired commands
get replayed; believing a clock that is too far ahead is how a node gets silenced. So (docs/protocol.md §7):

  * signed: a district time answer to one of our nonces (node.trust.timeanswer), held on the monotonic
    clock with a growing uncertainty. The only source that may set the persisted floor, and the one
    that wins every disagreement. A fresh signed answer is authoritative: it also corrects a floor
    that is ahead of it (saved by older firmware from a wrong NTP clock), so no wrong reading sticks.
  * ntp: the synchronised wall clock. With a fresh signed anchor it is used only while it agrees with
    it within `ntp_bound_s` (+ the anchor's uncertainty); otherwise the signed time is used and the
    `clock_conflict` alarm is up. Without one, it is used only at or above the floor. NTP never
    raises the persisted floor.
  * rtc: a hardware clock read at boot, bounded to [floor, floor + rtc_max_lead_s].
  * cellular: network time from the modem (NITZ), bounded to [floor, floor + cellular_max_lead_s]; a
    fake base station can lie, so it never raises the floor.
  * otherwise untrusted (None): no command that depends on time is accepted.

`schedule_now()` is looser than `trusted_now()`: bounded sources beyond their lead (cellular or RTC
after a month-long outage) may still *play the signed schedule already in force* - a wrong clock there
plays accepted content at the wrong hour, it can never admit a new or expired command.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_DAY = 86400.0


@dataclass(frozen=True)
class ClockPolicy:
    signed_max_age_s: float = 24 * 3600.0   # a signed anchor this old is dropped (the node asks every 15 min)
    drift_ppm: float = 100.0                # monotonic (crystal) drift allowed on top of the answer's uncertainty
    ntp_bound_s: float = 60.0               # NTP may differ this much from signed time (+ its uncertainty)
    cellular_max_age_s: float = 12 * 3600.0
    cellular_max_lead_s: float = 30 * _DAY
    rtc_max_age_s: float = 12 * 3600.0
    rtc_max_lead_s: float = 400 * _DAY      # an RTC on the board cannot be spoofed by radio


@dataclass(frozen=True)
class _Anchor:
    time: dt.datetime
    monotonic: float
    uncertainty_s: float = 0.0

    def age(self, monotonic: float) -> float:
        return monotonic - self.monotonic

    def now(self, monotonic: float, max_age: float) -> dt.datetime | None:
        elapsed = self.age(monotonic)
        if elapsed < 0 or elapsed > max_age:  # monotonic restarts at boot: an old anchor is useless
            return None
        return self.time + dt.timedelta(seconds=elapsed)


class ClockTrust:
    def __init__(self, floor: dt.datetime, *, build_date: dt.datetime | None = None,
                 policy: ClockPolicy = ClockPolicy()):
        self.policy = policy
        self._build = build_date
        self._floor = max(floor, build_date) if build_date else floor
        self._signed: _Anchor | None = None
        self._cellular: _Anchor | None = None
        self._rtc: _Anchor | None = None
        self._wall: dt.datetime | None = None
        self._trusted: dt.datetime | None = None
        self._schedule: dt.datetime | None = None
        self._source: str | None = None
        self._note = "no reading yet"
        self.conflict_s: float | None = None   # how far NTP (or an old floor) was off from signed time

    @property
    def floor(self) -> dt.datetime:
        """Persist this (every few minutes and at shutdown); pass it back in at the next boot."""
        return self._floor

    @property
    def conflict(self) -> bool:
        """The `clock_conflict` alarm: NTP disagreed with a fresh signed answer beyond the bound."""
        return self.conflict_s is not None

    # --- inputs ------------------------------------------------------------------------------------
    def accept_signed(self, time: dt.datetime, monotonic: float, uncertainty_s: float) -> float | None:
        """A time answer node.trust.timeanswer accepted (right nonce, right node, signed, bounded).

        Returns how many seconds the floor was moved back (it was ahead of signed time), else None."""
        lower = time - dt.timedelta(seconds=uncertainty_s)
        corrected = None
        if time + dt.timedelta(seconds=uncertainty_s) < self._floor:
            # The floor is ahead of a fresh signed answer: it was saved from a wrong clock. Correct it.
            corrected = round((self._floor - time).total_seconds(), 3)
            self._floor = max(lower, self._build) if self._build else lower
        elif lower > self._floor:
            self._floor = lower
        if not self._keeps_tighter_anchor(time, monotonic, uncertainty_s):
            self._signed = _Anchor(time, monotonic, uncertainty_s)
        return corrected

    def _keeps_tighter_anchor(self, time: dt.datetime, monotonic: float, uncertainty_s: float) -> bool:
        """A looser answer that agrees with the anchor in use (a slow round trip, answers out of order)
        must not widen the uncertainty: the tighter anchor is kept, as long as it is fresh."""
        held = self._signed_now(monotonic)
        if held is None:
            return False
        now, held_uncertainty = held
        agrees = abs((time - now).total_seconds()) <= uncertainty_s + held_uncertainty
        return agrees and held_uncertainty < uncertainty_s

    def signed_age(self, monotonic: float) -> float | None:
        return None if self._signed is None else self._signed.age(monotonic)

    def observe(self, *, wall: dt.datetime, monotonic: float, ntp_synced: bool,
                cellular: dt.datetime | None = None, rtc: dt.datetime | None = None) -> dt.datetime | None:
        """Feed one reading of the system clocks (and the modem's or RTC's time, when just read)."""
        if cellular is not None:
            self._cellular = _Anchor(cellular, monotonic)
        if rtc is not None:
            self._rtc = _Anchor(rtc, monotonic)
        self._wall = wall
        self._trusted, self._source, self._note = self._decide(wall, monotonic, ntp_synced)
        self._schedule = self._trusted if self._trusted is not None else self._loose(monotonic)
        if self._source in ("signed", "ntp") and self._signed is not None:
            self._raise_floor(monotonic)
        return self._trusted

    def _raise_floor(self, monotonic: float) -> None:
        signed = self._signed_now(monotonic)
        if signed is not None:
            low = signed[0] - dt.timedelta(seconds=signed[1])
            if low > self._floor:
                self._floor = low

    def _signed_now(self, monotonic: float) -> tuple[dt.datetime, float] | None:
        if self._signed is None:
            return None
        now = self._signed.now(monotonic, self.policy.signed_max_age_s)
        if now is None:
            return None
        uncertainty = self._signed.uncertainty_s + self._signed.age(monotonic) * self.policy.drift_ppm / 1e6
        return now, uncertainty

    def _bounded(self, anchor: _Anchor | None, monotonic: float, max_age: float, max_lead: float):
        """(time, within bounds) for a bounded source, or None when it is absent or stale."""
        now = anchor.now(monotonic, max_age) if anchor else None
        if now is None:
            return None
        lead = (now - self._floor).total_seconds()
        return now, 0 <= lead <= max_lead

    def _decide(self, wall, monotonic, ntp_synced):
        policy = self.policy
        signed = self._signed_now(monotonic)
        if signed is not None:
            time, uncertainty = signed
            if ntp_synced:
                off = (wall - time).total_seconds()
                if abs(off) <= policy.ntp_bound_s + uncertainty:
                    self.conflict_s = None
                    return wall, "ntp", "NTP synchronised, agrees with signed time"
                self.conflict_s = round(off, 3)
                return time, "signed", f"NTP is {off:+.0f} s off signed time: using signed time"
            self.conflict_s = None
            return time, "signed", "signed district time"
        if ntp_synced and wall >= self._floor:
            return wall, "ntp", "NTP synchronised (no signed time yet)"
        rtc = self._bounded(self._rtc, monotonic, policy.rtc_max_age_s, policy.rtc_max_lead_s)
        if rtc is not None and rtc[1]:
            return rtc[0], "rtc", "hardware clock within bounds"
        cellular = self._bounded(self._cellular, monotonic, policy.cellular_max_age_s, policy.cellular_max_lead_s)
        if cellular is not None and cellular[1]:
            return cellular[0], "cellular", "cellular network time within bounds"
        if cellular is not None or rtc is not None:
            return None, None, "RTC/cellular time outside [floor, floor + max lead]"
        if ntp_synced:
            return None, None, "NTP clock is below the trusted floor"
        return None, None, "no signed, NTP, RTC or cellular time"

    def _loose(self, monotonic: float) -> dt.datetime | None:
        """Schedule-grade time: an RTC or cellular reading at or above the floor, however far ahead."""
        for anchor, max_age in ((self._rtc, self.policy.rtc_max_age_s),
                                (self._cellular, self.policy.cellular_max_age_s)):
            found = self._bounded(anchor, monotonic, max_age, float("inf"))
            if found is not None and found[1]:
                return found[0]
        return None

    # --- verdicts ----------------------------------------------------------------------------------
    def trusted_now(self) -> dt.datetime | None:
        """The trusted time as of the last observe(), or None: pass it to verify_command as `now`."""
        return self._trusted

    def schedule_now(self) -> dt.datetime | None:
        """Time good enough to play the schedule already in force (see the module docstring)."""
        return self._schedule

    def status(self) -> dict:
        offset = None
        if self._trusted is not None and self._wall is not None:
            offset = round((self._trusted - self._wall).total_seconds(), 3)
        return {"trusted": self._trusted is not None, "source": self._source, "offset_s": offset,
                "floor": self._floor.isoformat(), "note": self._note, "conflict": self.conflict}
