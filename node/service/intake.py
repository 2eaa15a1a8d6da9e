"""Command intake: every message from the broker passes here, and only here.

  bytes -> size cap -> pure verifier (node.trust.verifier.verify_message) -> persist (seen id / document) -> act

The raw bytes go to the verifier and nowhere else: intake never parses an envelope itself.

The verifier decides; this class only persists what was accepted *before* acting on it (so a power cut
can never replay it), turns rejections into rate-limited events, and keeps the trust chain and the
clock trust up to date. A rejected message never reaches playback, so it can never make a sound or
move a relay.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
from dataclasses import dataclass, replace
from typing import Callable, Protocol

from node.adapters import inbound
from node.errors import RemoteDataError
from node.service.ratelimit import TokenBucket
from node.service.reporter import STORAGE_ERRORS
from node.trust import reasons
from node.trust.ack import verify_ack
from node.trust.commands import Limits
from node.trust.time_trust import ClockTrust
from node.trust.trustdoc import TrustDocument, load_trust_file, verify_trust_update
from node.trust.verifier import Accepted, Rejected, TrustAccepted, envelope_digest, verify_message, verify_stored

log = logging.getLogger(__name__)
# A DSSE signature's keyid as raw bytes: base64 payloads hold no quotes, so a match is a keyid field.
_KEYID = re.compile(rb'"keyid"\s*:\s*"([^"\\]{1,128})"')

BUILD_FLOOR = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)  # no trusted time can be older than this build
HELD_MAX = 64        # commands held while the clock is untrusted (a persistent session's backlog)
HELD_MAX_S = 120.0   # ... for at most this long after arrival, then reported clock_untrusted
# Decisions that depend on the clock: while a signed answer is on its way they wait for it (a bounded
# source a day behind would admit an expired command; ten years ahead, refuse a fresh emergency).
TIME_DEPENDENT = frozenset({reasons.CLOCK_UNTRUSTED, reasons.EXPIRED, reasons.NOT_YET_VALID, reasons.TRUST_EXPIRED,
                            reasons.KEY_EXPIRED, reasons.KEY_NOT_YET_VALID, reasons.ISSUED_BEFORE_RESET})


class Dispatcher(Protocol):
    def on_play(self, command, envelope: bytes) -> None: ...
    def on_stop(self, command, roles: frozenset) -> None: ...
    def on_schedule(self, command, envelope: bytes) -> None: ...
    def on_live(self, command) -> None: ...
    def on_config(self, command) -> bool: ...


class StoredEnvelopeRefused(RemoteDataError):
    """An envelope read back from local storage no longer verifies: it must not act."""


@dataclass
class IntakeDecision:
    """What happened to one message, for the log, tests and the demo timeline."""

    outcome: str          # accepted | rejected | ignored | held (waiting for trusted time)
    reason: str | None
    command_id: str | None
    kind: str | None


def _epoch(t: dt.datetime) -> float:
    return t.timestamp()


class TrustKeeper:
    """The trust document in force: the provisioned root document plus every update accepted since,
    kept as a chain of exact signed bytes and re-verified link by link at start-up."""

    def __init__(self, provisioned: bytes, store):
        self.store = store
        root = load_trust_file(provisioned)
        self.document: TrustDocument = root
        self.chain: list = []
        # The chain is kept in two places (state.db and the safe copy next to it): walk both from the
        # provisioned root and keep the newer result, so deleting or rebuilding state.db never brings
        # back a revoked key.
        candidates = [store.get("trust_chain", [])]
        copied = getattr(store, "copied_value", lambda key, default=None: default)("trust_chain", [])
        if copied:
            candidates.append(copied)
        for chain in candidates:
            document, verified = self._walk(root, chain)
            if document.version > self.document.version:
                self.document, self.chain = document, verified
        if self.chain and self.chain != store.get("trust_chain", []):
            log.warning("trust chain restored from the safe copy (version %d)", self.document.version)
            store.put("trust_chain", self.chain)

    @staticmethod
    def _walk(root: TrustDocument, chain) -> tuple[TrustDocument, list]:
        document, verified = root, []
        for link in chain if isinstance(chain, list) else []:
            try:
                accepted_at, envelope = link
                document = verify_trust_update(
                    base64.b64decode(envelope), current_trust=document,
                    now_or_floor=dt.datetime.fromisoformat(accepted_at))
                verified.append([accepted_at, envelope])
            except (RemoteDataError, ValueError, TypeError) as exc:
                # Typically: the SD card was re-provisioned with a newer root document. Keep what verifies.
                log.warning("stored trust update skipped: %s", exc)
        return document, verified

    def adopt(self, new: TrustDocument, envelope: bytes, now_or_floor: dt.datetime) -> TrustDocument:
        """Persist and use a document the verifier accepted against the current one (verify_message)."""
        chain = list(self.chain)
        chain.append([now_or_floor.isoformat(), base64.b64encode(envelope).decode()])
        # The whole chain: re-verification at start-up walks it from the provisioned root, and a root
        # rotation anywhere in it is needed to verify every later link (a few kB per version).
        self.store.put("trust_chain", chain)
        self.document, self.chain = new, chain
        return new

    def days_left(self, now: dt.datetime) -> float:
        return (self.document.expires - now).total_seconds() / 86400


class TrustedTime:
    """Trusted wall time, read fresh: feeds the system clocks to ClockTrust, returns its verdict.

    (ClockTrust.trusted_now() alone is the verdict of the *last* observation, which goes stale.)"""

    def __init__(self, clock, clock_trust: ClockTrust):
        self.clock, self.clock_trust = clock, clock_trust
        self._read_rtc = getattr(clock, "rtc", None)

    def now(self, cellular: dt.datetime | None = None, rtc: bool = False) -> dt.datetime | None:
        """rtc=True also reads the hardware clock (at start and on the minute tick, not per message)."""
        return self.clock_trust.observe(wall=self.clock.wall(), monotonic=self.clock.monotonic(),
                                        ntp_synced=self.clock.ntp_synchronized(), cellular=cellular,
                                        rtc=self._read_rtc() if rtc and self._read_rtc else None)

    def schedule_now(self) -> dt.datetime | None:
        """For playing the schedule already in force: trusted time, else a bounded source beyond its lead."""
        self.now()
        return self.clock_trust.schedule_now()


class CommandIntake:
    def __init__(self, *, node_id: str, groups: list[str], store, trust: TrustKeeper, clock, clock_trust: ClockTrust,
                 limits: Limits, max_message_bytes: int, dispatcher: Dispatcher,
                 emit: Callable[[str, dict], None],
                 on_update: Callable[[object, bytes], None] | None = None,
                 on_storage_error: Callable[[str, Exception], None] | None = None,
                 time_topic: str | None = None, time_answers: Callable[[bytes], object] | None = None,
                 awaiting_signed: Callable[[], bool] = lambda: False):
        """on_storage_error(what, exc): a state write failed (disk full): the command is still acted on,
        its id remembered in memory; None re-raises (tests that want the failure loud).
        time_topic / time_answers: the node's own time topic and the check of what arrives there
        (node.service.timekeeper.TimeKeeper.on_answer); None: this node takes no time answers.
        awaiting_signed(): a signed answer is on its way and none came yet in this run
        (TimeKeeper.awaiting_signed): every time-dependent decision waits for it."""
        self.node_id, self.groups = node_id, list(groups)
        self.on_update = on_update           # node.update.service.UpdateService.on_command
        self.on_storage_error = on_storage_error
        self.seen_in_memory: set[str] = set()  # accepted while the state database refused writes
        self.store, self.trust, self.clock, self.clock_trust = store, trust, clock, clock_trust
        self.limits, self.max_message_bytes = limits, max_message_bytes
        self.dispatcher, self.emit = dispatcher, emit
        self.trusted_time = TrustedTime(clock, clock_trust)
        self.rejections = TokenBucket(rate_per_s=10 / 60, burst=20)
        self.decisions: list[IntakeDecision] = []  # last few, for status and tests
        self._own_topic_part = f"/node/{node_id}/"  # its cmd and ack topics
        self._triage_document = None
        self._emergency_keyids: set[str] = set()
        self.time_topic, self.time_answers, self.awaiting_signed = time_topic, time_answers, awaiting_signed
        # Commands refused only for want of trusted time (typically queued on the broker while the node
        # was down, delivered before its first signed time answer): decided again once time is trusted,
        # against that time, so an expired one is rejected "expired", never played.
        self.held: list[tuple[float, str, bytes, Rejected]] = []

    # --- time ------------------------------------------------------------------------------------
    def observe_clock(self, cellular: dt.datetime | None = None, rtc: bool = False) -> dt.datetime | None:
        return self.trusted_time.now(cellular, rtc)

    def retry_held(self) -> list[IntakeDecision]:
        """Signed time arrived (or stopped being expected while a bounded source trusts the clock): decide
        the held commands now, in arrival order; each keeps its arrival time for the 120 s limit."""
        if not self.held or self.awaiting_signed() or self.observe_clock() is None:
            return []
        waiting, self.held = self.held, []
        return [self.handle(topic, payload, arrived=arrived) for arrived, topic, payload, _ in waiting]

    def expire_held(self, max_wait_s: float = HELD_MAX_S) -> None:
        """Still no trusted time: what waited too long is reported clock_untrusted (once) and dropped."""
        now = self.clock.monotonic()
        keep = []
        for held in self.held:
            at, topic, _, refused = held
            if now - at <= max_wait_s:
                keep.append(held)
            else:   # the refusal it was held for (command id, envelope_sha256), reported now
                self._rejected(topic, replace(refused, detail=f"no trusted time within {max_wait_s:.0f} s "
                                                             "of arrival"))
        self.held = keep

    # --- envelopes read back from local storage ---------------------------------------------------
    def read_stored(self, envelope: bytes, kinds: tuple[str, ...], where: str, stored_id: str | None = None):
        """The command in a stored envelope (journal row, schedule or config document), verified again
        against the trust in force; raises StoredEnvelopeRefused (reported) when it no longer verifies.
        Whoever can write the SD card while the node is off must not be able to make it speak.
        `stored_id`: the command id the row is kept under, reported when the envelope itself cannot say."""
        result = verify_stored(envelope, trust=self.trust.document, node_id=self.node_id, groups=self.groups,
                               kinds=kinds, limits=self.limits)
        if isinstance(result, Accepted):
            return result.command
        log.error("stored %s refused: %s %s", where, result.reason, result.detail)
        self.emit("stored_envelope_refused", {"store": where, "reason": result.reason, "keyid": result.keyid,
                                              "command_id": result.command_id or stored_id,
                                              "detail": result.detail[:200] or None})
        raise StoredEnvelopeRefused(result.reason, result.detail, keyid=result.keyid, command_id=result.command_id)

    # --- messages ----------------------------------------------------------------------------------
    def triage(self, topic: str, payload: bytes) -> int:
        """Cheap pre-check on the broker's network thread, before anything is verified: which lane of
        the bounded inbound queue a message waits in. A message that claims a signature by an
        emergency key goes first (a forger gains nothing: it is verified like any other), then the
        node's own topics (commands, district acks), then group topics. Reads the trust document reference only."""
        document = self.trust.document
        if document is not self._triage_document:
            self._emergency_keyids = {k for k, key in document.keys.items() if "emergency" in key.roles}
            self._triage_document = document
        for n, match in enumerate(_KEYID.finditer(payload)):
            if n >= self.limits.max_signatures:
                break
            if match.group(1).decode("ascii", "replace") in self._emergency_keyids:
                return inbound.URGENT
        return inbound.OWN if self._own_topic_part in topic else inbound.GROUP

    def handle(self, topic: str, payload: bytes, size: int | None = None,  # noqa: C901
               arrived: float | None = None) -> IntakeDecision:
        now = self.observe_clock()
        size = len(payload) if size is None else size
        if size > self.max_message_bytes:
            return self._rejected(topic, Rejected(reasons.TOO_LARGE, f"{size} bytes"))
        if topic == self.time_topic:   # the only topic time answers are taken from; never a command
            return self._time_answer(topic, payload)
        result = verify_message(
            payload, trust=self.trust.document, node_id=self.node_id, groups=self.groups, topic=topic, now=now,
            seen=self._seen, versions=self.store.versions(), limits=self.limits, floor=self.clock_trust.floor,
            reset_epoch=self.store.reset_epoch(now))
        if len(self.held) < HELD_MAX and (
                (isinstance(result, Rejected) and result.reason == reasons.CLOCK_UNTRUSTED)
                or (self.awaiting_signed() and (isinstance(result, Accepted) or (
                    isinstance(result, Rejected) and result.reason in TIME_DEPENDENT)))):
            refusal = result if isinstance(result, Rejected) else Rejected(
                reasons.CLOCK_UNTRUSTED, "", command_id=result.command.id, envelope_sha256=envelope_digest(payload))
            self.held.append((self.clock.monotonic() if arrived is None else arrived, topic, bytes(payload), refusal))
            return self._note(IntakeDecision("held", refusal.reason, refusal.command_id, None))
        if isinstance(result, Rejected):
            return self._rejected(topic, result)
        if isinstance(result, TrustAccepted):
            return self._trust_accepted(result, payload)
        return self._accepted(topic, result, payload)

    def _time_answer(self, topic: str, payload: bytes) -> IntakeDecision:
        if self.time_answers is None:
            return self._rejected(topic, Rejected(reasons.UNSUPPORTED_TYPE, "this node does not ask for time",
                                                  envelope_sha256=envelope_digest(payload)))
        result = self.time_answers(payload)
        if isinstance(result, Rejected):
            return self._rejected(topic, result)
        return self._note(IntakeDecision("accepted", None, None, "time"))

    def _accepted(self, topic: str, accepted: Accepted, payload: bytes) -> IntakeDecision:  # noqa: C901
        command = accepted.command
        # Persist first: once the id is on disk, the same bytes can never be accepted again. Play and live
        # commands are journalled in the same transaction, so a power cut between "accepted" and
        # "played" leaves a command to resume and record, never a silently lost one.
        journal = None
        if command.type in ("play", "live"):
            journal = (f"cmd:{command.id}", {"envelope": base64.b64encode(payload).decode()})
        self._write("state", self.store.accept_command, command.id, _epoch(accepted.remember_until), journal,
                    remember=command.id)
        log.info("accepted %s %s from %s (keys %s)", command.type, command.id, topic,
                 ",".join(k[:8] for k in accepted.keyids))
        if command.type == "schedule":
            self._write("state", self.store.store_document, "schedule", command.version, payload)
            self.dispatcher.on_schedule(command, payload)
        elif command.type == "config":
            # Only a config the node applied moves its version: a refused one can be corrected and resent.
            if self.dispatcher.on_config(command):
                self.store.store_document("config", command.version, payload)
                from node.service import settings

                settings.keep_envelope(self.store, command.version, command.body.settings, payload, command.id)
        elif command.type == "play":
            self.dispatcher.on_play(command, payload)
        elif command.type == "stop":
            self.dispatcher.on_stop(command, accepted.roles)
        elif command.type == "live":
            self.dispatcher.on_live(command)
        self.emit("accepted", {"command_id": command.id, "command": command.type, "level": command.level})
        if command.type == "update":
            if self.on_update is None:
                self.emit("update_refused", {"version": None, "reason": "not_updatable",
                                             "detail": "this build has no update service"})
            else:
                self.on_update(command, payload)
        return self._note(IntakeDecision("accepted", None, command.id, command.type))

    def _seen(self, command_id: str) -> bool:
        return command_id in self.seen_in_memory or self.store.seen(command_id)

    def _write(self, what: str, write, *args, remember: str | None = None) -> None:
        """A state write; on a full or failing disk the node acts on the command anyway (it is verified)
        and keeps the replay protection in memory, and the failure is counted and reported."""
        try:
            write(*args)
        except STORAGE_ERRORS as exc:
            if self.on_storage_error is None:
                raise
            if remember:
                self.seen_in_memory.add(remember)
            log.error("state: could not store %s: %s", args[0], exc)
            self.on_storage_error(what, exc)

    def _trust_accepted(self, accepted: TrustAccepted, payload: bytes) -> IntakeDecision:
        doc = self.trust.adopt(accepted.document, payload, accepted.at)
        log.info("trust document version %d accepted", doc.version)
        self.emit("trust_updated", {"version": doc.version, "expires": doc.expires.isoformat()})
        return self._note(IntakeDecision("accepted", None, None, "trust"))

    def verify_ack(self, topic: str, payload: bytes) -> list[str]:
        """Record ids a district acknowledgement names (node/trust/ack.py); [] when it does not verify,
        reported (rate-limited) like a rejected command: a forged ack deletes nothing."""
        try:
            return verify_ack(payload, self.trust.document, self.node_id, self.clock_trust.trusted_now())
        except RemoteDataError as exc:
            self._rejected(topic, Rejected(exc.reason, exc.detail, envelope_sha256=envelope_digest(payload)))
            return []

    def _rejected(self, topic: str, rejected: Rejected) -> IntakeDecision:
        outcome = "rejected" if rejected.report else "ignored"
        reported = rejected.report and self.rejections.allow(self.clock.monotonic())
        # Logged at WARNING as often as reported (a flood must not flood the journal); the rest at DEBUG.
        level = logging.WARNING if reported else logging.DEBUG
        if rejected.reason == reasons.INTERNAL_ERROR:
            level = logging.ERROR  # a bug in the verifier, not a bad sender
        log.log(level, "%s message on %s: %s %s", outcome, topic, rejected.reason, rejected.detail)
        if reported:
            data = {"reason": rejected.reason, "keyid": rejected.keyid, "command_id": rejected.command_id,
                    "topic": topic, "detail": rejected.detail[:200] or None,
                    "envelope_sha256": rejected.envelope_sha256}
            suppressed = self.rejections.take_suppressed()
            if suppressed:
                data["suppressed"] = suppressed
            self.emit("rejected", data)
        return self._note(IntakeDecision(outcome, rejected.reason, rejected.command_id, None))

    def _note(self, decision: IntakeDecision) -> IntakeDecision:
        self.decisions = (self.decisions + [decision])[-20:]
        return decision


def load_clock_trust(store, floor_file=None) -> ClockTrust:
    """The floor saved every few minutes (floor_file) or at the last clean stop (store): the later one.
    (If either is wrong-ahead, the first fresh signed answer corrects it: node.trust.time_trust.)"""
    saved = [BUILD_FLOOR]
    stored = store.get("time_floor")
    if stored:
        try:
            saved.append(dt.datetime.fromisoformat(stored))
        except (TypeError, ValueError):
            log.warning("stored time floor %r unreadable: ignored", stored)
    if floor_file is not None and (from_file := floor_file.load()) is not None:
        saved.append(from_file)
    return ClockTrust(max(saved), build_date=BUILD_FLOOR)
