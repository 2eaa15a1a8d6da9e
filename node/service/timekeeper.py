"""TimeKeeper: asks the district for signed time and feeds what it accepts into ClockTrust.

  connect / timer -> new nonce -> publish {"v":1,"nonce":…} on spk/node/ID/time/req
  answer on spk/node/ID/time -> node.trust.timeanswer.verify_time_answer (pure) -> ClockTrust.accept_signed

It asks on every broker connection, every 2 s (doubling to 60 s) while the clock is untrusted (doubling
to `refresh_s` while NTP, RTC or cellular time is trusted but nothing signed is), and
every `refresh_s` (2 h by default: bounds the drift of the monotonic clock and catches NTP going wrong) while
it has. Runs on the node loop only (answers arrive as MessageReceived events; the timer is a loop
timer); nonces live in memory only (a restart makes every earlier answer worthless).
"""

from __future__ import annotations

import logging
import secrets
from typing import Callable

from node.errors import RemoteDataError
from node.trust.envelope import parse_envelope
from node.trust.timeanswer import (
    DEFAULT_TIME_POLICY,
    NonceBook,
    Rejected,
    SignedTime,
    TimePolicy,
    parse_answer,
    request_body,
)
from node.trust.timeanswer import verify_time_answer as _verify

log = logging.getLogger(__name__)


def _answer_nonces(payload: bytes) -> tuple[str, ...]:
    """The nonces of an answer verify_time_answer has just accepted (so it parses)."""
    try:
        return parse_answer(parse_envelope(payload, max_bytes=DEFAULT_TIME_POLICY.max_answer_bytes).payload).nonces
    except RemoteDataError:   # cannot happen after acceptance; then only the nonce it used is spent
        return ()


class TimeKeeper:
    def __init__(self, *, node_id: str, request_topic: str, clock, clock_trust, trust_document: Callable,
                 publish: Callable[[str, bytes], object], loop, emit: Callable[[str, dict], None],
                 on_signed: Callable[[float | None], None] = lambda corrected: None,
                 trusted_now: Callable[[], object] | None = None,
                 on_unanswered: Callable[[], None] = lambda: None, await_s: float = 5.0,
                 policy: TimePolicy = DEFAULT_TIME_POLICY, refresh_s: float = 7200.0, retry_min_s: float = 2.0,
                 retry_max_s: float = 60.0, new_nonce: Callable[[], str] = lambda: secrets.token_hex(32)):
        self.node_id, self.request_topic = node_id, request_topic
        self.clock, self.clock_trust, self.trust_document = clock, clock_trust, trust_document
        self.publish, self.loop, self.emit, self.policy = publish, loop, emit, policy
        self.refresh_s, self.retry_min_s, self.retry_max_s = refresh_s, retry_min_s, retry_max_s
        self.new_nonce = new_nonce
        self.book = NonceBook()
        self.connected = False
        self._retry = retry_min_s
        self._timer = None
        self.trusted_now = trusted_now or clock_trust.trusted_now   # a fresh verdict (TrustedTime.now)
        self.on_signed = on_signed           # the node: floor saved, held commands decided (gets the correction)
        self.on_unanswered = on_unanswered   # the node: held commands decided by the bounded sources
        self._unanswered_timer = None
        self.await_s = await_s
        self._connected_at: float | None = None   # monotonic time of this connection's first request
        self.requests = 0
        self.accepted = 0

    # --- asking -----------------------------------------------------------------------------------
    def _has_fresh_signed(self) -> bool:
        age = self.clock_trust.signed_age(self.clock.monotonic())
        return age is not None and age < self.refresh_s

    def ask(self) -> None:
        """Publish one request with a new nonce (if connected), then re-arm the timer."""
        self.loop.cancel(self._timer)
        if self.connected:
            nonce = self.new_nonce()
            self.book.issue(nonce, self.clock.monotonic())
            self.requests += 1
            self.publish(self.request_topic, request_body(nonce))
            if self._connected_at is None:
                self._connected_at = self.clock.monotonic()
                if self.await_s > 0 and self.clock_trust.signed_age(self._connected_at) is None:
                    self.loop.cancel(self._unanswered_timer)
                    self._unanswered_timer = self.loop.call_later(self.await_s + 0.05, self._unanswered)
        if self._has_fresh_signed():
            delay = self.refresh_s
        else:
            # Untrusted: nothing time-bound works, keep asking every minute at most. Trusted by a bounded
            # source (NTP, RTC, cellular) but unsigned: taper off to refresh_s (a district without the
            # time duty must not cost every node a request a minute).
            cap = self.retry_max_s if self.trusted_now() is None else self.refresh_s
            delay, self._retry = self._retry, min(cap, self._retry * 2)
        self._timer = self.loop.call_later(delay, self.ask)

    def awaiting_signed(self) -> bool:
        """No signed answer yet in this run, and this connection's first request is under await_s old:
        the answer is expected any moment (the district answers in milliseconds)."""
        if self.await_s <= 0 or not self.connected or self._connected_at is None:
            return False
        mono = self.clock.monotonic()
        return self.clock_trust.signed_age(mono) is None and mono - self._connected_at <= self.await_s

    def _unanswered(self) -> None:
        self._unanswered_timer = None
        if not self.awaiting_signed():
            self.on_unanswered()

    def on_connected(self) -> None:
        self.connected = True
        self._retry = self.retry_min_s
        self.ask()

    def on_disconnected(self) -> None:
        self.connected = False
        self._connected_at = None

    def stop(self) -> None:
        self.loop.cancel(self._timer)
        self.loop.cancel(self._unanswered_timer)
        self._timer = self._unanswered_timer = None

    # --- answers ----------------------------------------------------------------------------------
    def on_answer(self, payload: bytes) -> SignedTime | Rejected:
        """Verify one answer (from any topic); accepted time goes into ClockTrust at once."""
        result = _verify(payload, trust=self.trust_document(), node_id=self.node_id, issued=self.book.issued,
                         received_monotonic=self.clock.monotonic(), policy=self.policy)
        if isinstance(result, Rejected):
            return result
        # Every nonce of ours the answer carries is used up, not only the newest: a batch answer serving
        # two open requests must not set the clock a second time when it is replayed.
        for nonce in _answer_nonces(payload):
            self.book.use(nonce)
        self.book.use(result.nonce)
        self.accepted += 1
        corrected = self.clock_trust.accept_signed(result.time, result.monotonic, result.uncertainty_s)
        self._retry = self.retry_min_s
        log.info("signed time %s ± %.3f s accepted", result.time.isoformat(), result.uncertainty_s)
        if corrected is not None:
            log.warning("time floor was %.0f s ahead of signed time: corrected", corrected)
            self.emit("clock_floor_corrected", {"ahead_s": corrected})
        self.loop.cancel(self._timer)
        self._timer = self.loop.call_later(self.refresh_s, self.ask)
        self.on_signed(corrected)
        return result
