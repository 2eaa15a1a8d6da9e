"""District simulator: signs real commands with the workspace's keys and publishes them as the district.

It implements the same interface a district server has towards nodes (python-tuf's repository
simulator is the model): tests and the demo use it instead of faking what a node receives.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from node.topics import mqtt_client_id
from provisioning.district import signing
from provisioning.district.localbroker import client_tls
from provisioning.district.workspace import Workspace


class DistrictSimulator:
    def __init__(self, workspace: str | Path, broker_address: str, identity: str = "district"):
        self.ws = Workspace.load(workspace)
        self.broker_address = broker_address
        host, _, port = broker_address.rpartition(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=mqtt_client_id(identity, f"sim-{secrets.token_hex(3)}"),
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set_context(client_tls(workspace, identity))
        self._connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: (not rc.is_failure) and self._connected.set()
        self.client.connect(host.strip("[]"), int(port), keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise ConnectionError(f"district simulator: no connection to {broker_address}")
        self.sent: list[dict] = []

    # --- building and signing --------------------------------------------------------------------
    def command(self, kind: str, body: dict, targets: list[str], **times) -> dict:
        return signing.build_command(kind, body, targets=targets, **times)

    def sign(self, command: dict, keys=None) -> bytes:
        return signing.sign_command(command, keys if keys is not None else self.ws.signing_keys(command))

    def play_body(self, audio: str | Path, url: str | None, *, level: str = "normal", volume: int | None = None,
                  start_at: dt.datetime | None = None, content_id: str | None = None, title: str | None = None,
                  duration: float | None = None) -> dict:
        fields = signing.content_fields(audio, duration=duration)
        return {"content_id": content_id or signing.content_id_for(audio, fields["sha256"]), "level": level,
                "url": url, **fields, "volume": volume,
                "start_at": signing.format_time(start_at) if start_at else None, "zones": None,
                **({"title": title} if title else {})}

    # --- sending ---------------------------------------------------------------------------------
    def publish_raw(self, topic: str, payload: bytes, timeout: float = 10) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise ConnectionError(f"no PUBACK for {topic}")

    def send_envelope(self, envelope: bytes, targets: list[str]) -> None:
        for topic in dict.fromkeys(self.ws.topic_for(t) for t in targets):
            self.publish_raw(topic, envelope)

    def send(self, kind: str, body: dict, targets: list[str], keys=None, **times) -> str:
        """Sign and publish; returns the command id (as `speaker-district send` prints it)."""
        command = self.command(kind, body, targets, **times)
        self.send_envelope(self.sign(command, keys), targets)
        self.sent.append(command)
        return command["id"]

    def send_trust(self, envelope: bytes) -> None:
        self.publish_raw(self.ws.topic_for("all"), envelope)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

