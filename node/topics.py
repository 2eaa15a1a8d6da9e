"""MQTT topic names (docs/protocol.md, "Topics")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str
    node_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/node/{self.node_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def delta(self) -> str:
        return f"{self.base}/delta"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def ack(self) -> str:
        """District store -> node: signed acknowledgements of committed records (node/trust/ack.py)."""
        return f"{self.base}/ack"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def time_request(self) -> str:
        return f"{self.base}/time/req"

    @property
    def time_answer(self) -> str:
        return f"{self.base}/time"

    def group_cmd(self, group: str) -> str:
        return f"{self.prefix}/group/{group}/cmd"

    def command_topics(self, groups) -> list[str]:
        return [self.cmd] + [self.group_cmd(g) for g in sorted(set(groups) | {"all"})]

    def subscriptions(self, groups) -> list[str]:
        """Everything the node subscribes to: its command topics and its acknowledgement topic."""
        return self.command_topics(groups) + [self.ack]


def mqtt_client_id(identity: str, purpose: str | None = None) -> str:
    """The MQTT client id a connection of certificate identity IDENTITY must use (docs/protocol.md §1a):
    the CN itself for the identity's one long-lived session, "CN:purpose" for any further connection.
    The district broker refuses every other client id, so no certificate can reach another's session."""
    if ":" in identity or (purpose is not None and not purpose):
        raise ValueError(f"bad identity/purpose for a client id: {identity!r}, {purpose!r}")
    return identity if purpose is None else f"{identity}:{purpose}"
