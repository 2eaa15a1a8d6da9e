"""The district time service (a `speaker-district serve` duty): answers node time requests, signed.

A node publishes `{"v":1,"nonce":"<64 hex>"}` on spk/node/NODE/time/req; this duty answers on
spk/node/NODE/time with a DSSE envelope (application/vnd.speaker.time+json) holding its time, its
uncertainty radius and the nonce, signed by the workspace keys that hold the `time` role and no other
(the online key `time`; docs/protocol.md §7a). The node id comes from the topic, which the broker's ACL
lets only that node publish on. Answers are QoS 0 and never retained: a late answer is useless to the node anyway.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Callable

from node.errors import RemoteDataError
from node.service.ratelimit import TokenBucket
from node.topics import mqtt_client_id
from node.trust.envelope import PAYLOAD_TIME, sign_envelope
from node.trust.keys import keyid_of_key
from node.trust.timeanswer import answer_body, parse_request
from provisioning.district.localbroker import client_tls
from provisioning.district.workspace import Workspace

log = logging.getLogger(__name__)

DEFAULT_RADIUS_MS = 1000   # the district's own clock error: NTP on a server is good to a few ms; be modest


def time_keys(workspace: Workspace) -> list:
    """The workspace's private keys that hold the `time` role and no other, as many as the trust threshold
    asks. This duty is always online, so its key is the first one an intruder on the district server gets:
    a key that could also sign schedules or config (the `schedule` key before issue 9) is never used."""
    trust = workspace.trust
    found, broad = [], []
    for path in sorted((workspace.directory / "keys").glob("*.key")):
        if path.stem.startswith("root-"):
            continue
        key = workspace.key(path.stem)
        entry = trust.keys.get(keyid_of_key(key))
        if entry is None or "time" not in entry.roles or keyid_of_key(key) in trust.revoked:
            continue
        (found if entry.roles == {"time"} else broad).append(key)
    need = trust.threshold("time")
    if len(found) < need:
        hint = ""
        if broad:
            hint = ("; a key that also holds other roles is never used online. Give the time service a key "
                    f"of its own: 'speaker-district send {workspace.directory} trust --add-key time:time "
                    "--drop-role schedule:time', then 'speaker-district serve-dir' again (docs/architecture.md)")
        raise RuntimeError(f"the workspace holds {len(found)} key(s) with only the time role; the trust "
                           f"document needs {need}{hint}")
    return found[:need]


class TimeSigner:
    """Pure part: request bytes + node id + now -> signed answer bytes (or None for a bad request)."""

    def __init__(self, keys, radius_ms: int = DEFAULT_RADIUS_MS):
        self.keys, self.radius_ms = list(keys), radius_ms

    def answer(self, node_id: str, request: bytes, now: dt.datetime) -> bytes:
        nonce = parse_request(request)
        return sign_envelope(PAYLOAD_TIME, answer_body(node_id, [nonce], now, self.radius_ms), self.keys)


class TimeService:
    """Duty: subscribe to every node's time requests, answer each one at once."""

    name = "time"

    def __init__(self, workspace: str | Path, broker: str | None = None, *, radius_ms: int = DEFAULT_RADIUS_MS,
                 identity: str = "district", now: Callable[[], dt.datetime] | None = None,
                 per_node_rate: float = 1.0, per_node_burst: int = 5):
        self.workspace = Workspace.load(workspace)
        self.broker = broker or self.workspace.broker
        self.identity = identity
        self.signer = TimeSigner(time_keys(self.workspace), radius_ms)
        self.now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self.prefix = self.workspace.topic_prefix
        self._rate, self._burst = per_node_rate, per_node_burst
        self._buckets: dict[str, TokenBucket] = {}
        self.answered = 0
        self.refused = 0
        self._client = None
        self._subscribed = threading.Event()

    def handle(self, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        """(answer topic, answer bytes) for one request, or None (bad topic or request, or over rate)."""
        parts = topic.split("/")
        if len(parts) != 5 or parts[1] != "node" or parts[3:] != ["time", "req"]:
            return None
        node_id = parts[2]
        bucket = self._buckets.setdefault(node_id, TokenBucket(rate_per_s=self._rate, burst=self._burst))
        if not bucket.allow(time.monotonic()):
            self.refused += 1
            return None
        try:
            answer = self.signer.answer(node_id, payload, self.now())
        except RemoteDataError as exc:
            self.refused += 1
            log.warning("time request from %s refused: %s", node_id, exc)
            return None
        self.answered += 1
        return f"{self.prefix}/node/{node_id}/time", answer

    # --- duty ----------------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        import paho.mqtt.client as mqtt

        host, _, port = self.broker.rpartition(":")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=mqtt_client_id(self.identity, f"time-{secrets.token_hex(3)}"),
                             protocol=mqtt.MQTTv5)
        client.tls_set_context(client_tls(self.workspace.directory, self.identity))
        request_topic = f"{self.prefix}/node/+/time/req"
        client.on_connect = lambda c, u, f, rc, p: (not rc.is_failure) and c.subscribe(request_topic, qos=0)
        client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(0.2, 5)
        client.connect_async(host.strip("[]") or "127.0.0.1", int(port or 8883), keepalive=30)
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(timeout):  # a server that cannot answer must not look healthy
            self.stop()
            raise ConnectionError(f"time service: could not subscribe on {self.broker}")
        log.info("time service answering on %s (radius %d ms)", request_topic, self.signer.radius_ms)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            reply = self.handle(msg.topic, msg.payload)
        except Exception:  # noqa: BLE001 - one bad request must not stop the service; logged, counted
            self.refused += 1
            log.exception("time request on %s", msg.topic)
            return
        if reply:
            client.publish(reply[0], reply[1], qos=0, retain=False)

    def __enter__(self) -> "TimeService":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
