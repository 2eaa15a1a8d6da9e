"""Clock trust: which time the verifier may believe. Pure: the clock adapter feeds readings in.

A Raspberry Pi has no real-time clock: it boots at 1970 (or at fake-hwclock's last save) and NTP over
4G may be late, blocked or spoofed. Believing a wrong clock is how expired commands get replayed, so:

  * floor: the latest trusted time ever seen, persisted by the adapter, never below the software build
    date. Nothing below the floor is ever trusted (a 1970 boot, a replayed old beacon).
  * NTP-synchronised wall clock at or above the floor: trusted ("ntp") - unless a fresh signed beacon
    disagrees by more than `agreement_s`, then the beacon wins (a signature beats unauthenticated NTP).
  * otherwise a fresh verified beacon: trusted as beacon_time + monotonic time elapsed ("beacon").
  * otherwise cellular network time (NITZ from the modem), only as a bounded source: it must lie within
    [floor, floor + cellular_max_lead_s]. A fake base station can lie, so cellular time never raises
    the floor, and it can move the clock at most `cellular_max_lead_s` past what we already knew.
  * otherwise untrusted (None): a wall clock 5 years ahead with no NTP, beacon or cellular is not used.
Only "ntp" and "beacon" raise the floor.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from node.errors import RemoteDataError
from node.trust import reasons


@dataclass(frozen=True)
class ClockPolicy:
    beacon_max_age_s: float = 12 * 3600.0   # monotonic drift (~50 ppm) stays under 3 s in 12 h
    cellular_max_age_s: float = 12 * 3600.0
    agreement_s: float = 300.0
    cellular_max_lead_s: float = 30 * 86400.0


@dataclass(frozen=True)
class _Anchor:
    time: dt.datetime
    monotonic: float

    def now(self, monotonic: float, max_age: float) -> dt.datetime | None:
        elapsed = monotonic - self.monotonic
        if elapsed < 0 or elapsed > max_age:  # monotonic restarts at boot: an old anchor is useless
            return None
        return self.time + dt.timedelta(seconds=elapsed)


class ClockTrust:
    def __init__(self, floor: dt.datetime, *, build_date: dt.datetime | None = None,
                 policy: ClockPolicy = ClockPolicy()):
        self.policy = policy
        self._floor = max(floor, build_date) if build_date else floor
        self._beacon: _Anchor | None = None
        self._cellular: _Anchor | None = None
        self._wall: dt.datetime | None = None
        self._trusted: dt.datetime | None = None
        self._source: str | None = None
        self._note = "no reading yet"

    @property
    def floor(self) -> dt.datetime:
        """Persist this (e.g. hourly and at shutdown); pass it back in at the next boot."""
        return self._floor

    def accept_beacon(self, beacon_time: dt.datetime, monotonic: float) -> None:
        """Record a time beacon that node.trust.verifier already accepted (signed by a "time" key)."""
        if beacon_time < self._floor:
            raise RemoteDataError(reasons.BEACON_TOO_OLD, f"beacon {beacon_time.isoformat()} below floor")
        if self._beacon is not None:
            current = self._beacon.now(monotonic, self.policy.beacon_max_age_s)
            if current is not None and beacon_time < current - dt.timedelta(seconds=self.policy.agreement_s):
                raise RemoteDataError(reasons.BEACON_TOO_OLD, "older than the beacon already in use")
        self._beacon = _Anchor(beacon_time, monotonic)

    def observe(self, *, wall: dt.datetime, monotonic: float, ntp_synced: bool,
                cellular: dt.datetime | None = None) -> dt.datetime | None:
        """Feed one reading of the system clocks (and the modem's network time, if just read)."""
        if cellular is not None:
            self._cellular = _Anchor(cellular, monotonic)
        self._wall = wall
        self._trusted, self._source, self._note = self._decide(wall, monotonic, ntp_synced)
        if self._trusted is not None and self._source in ("ntp", "beacon") and self._trusted > self._floor:
            self._floor = self._trusted
        return self._trusted

    def _decide(self, wall, monotonic, ntp_synced):
        policy = self.policy
        agreement = dt.timedelta(seconds=policy.agreement_s)
        beacon = self._beacon.now(monotonic, policy.beacon_max_age_s) if self._beacon else None
        if beacon is not None and beacon < self._floor:
            beacon = None
        wall_ok = wall >= self._floor
        if ntp_synced and wall_ok:
            if beacon is not None and abs(wall - beacon) > agreement:
                return beacon, "beacon", "NTP disagrees with the signed beacon; using the beacon"
            return wall, "ntp", "NTP synchronised"
        if beacon is not None:
            return beacon, "beacon", "signed time beacon"
        cellular = self._cellular.now(monotonic, policy.cellular_max_age_s) if self._cellular else None
        if cellular is not None:
            lead = (cellular - self._floor).total_seconds()
            if 0 <= lead <= policy.cellular_max_lead_s:
                return cellular, "cellular", "cellular network time within bounds"
            return None, None, "cellular network time outside [floor, floor + max lead]"
        if not wall_ok:
            return None, None, "system clock is below the trusted floor"
        return None, None, "no NTP, beacon or cellular time"

    def trusted_now(self) -> dt.datetime | None:
        """The trusted time as of the last observe(), or None: pass it to verify_command as `now`."""
        return self._trusted

    def status(self) -> dict:
        offset = None
        if self._trusted is not None and self._wall is not None:
            offset = round((self._trusted - self._wall).total_seconds(), 3)
        return {"trusted": self._trusted is not None, "source": self._source, "offset_s": offset,
                "floor": self._floor.isoformat(), "note": self._note}
