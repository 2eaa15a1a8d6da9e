"""One exception root for the node, split by where the fault comes from.

RemoteDataError  - bytes that came from outside (broker, download, USB stick) are wrong: a district
                   should hear about it as a typed event with a stable reason code.
TransportError   - the link failed (broker, HTTPS, serial port): retry, back off.
DeviceError      - local hardware misbehaved (relay feedback, modem, sound card).
ConfigError      - the operator's configuration is wrong: exit 78 (EX_CONFIG).
"""


class SpeakerNodeError(Exception):
    """Root of every error this package raises on purpose."""


class RemoteDataError(SpeakerNodeError):
    """Data from outside the node was rejected. `reason` is a stable code from docs/protocol.md."""

    def __init__(self, reason: str, detail: str = "", **context):
        self.reason = reason
        self.detail = detail
        self.context = context
        super().__init__(f"{reason}: {detail}" if detail else reason)


class TransportError(SpeakerNodeError):
    """A link to the outside failed; the caller may retry later."""


class DeviceError(SpeakerNodeError):
    """Local hardware (relay, input, modem, sound output) did not behave."""


class HardwareUnavailable(DeviceError):
    """A device the node needs could not be opened at start (GPIO chip missing or pins busy). Not a
    configuration error: another process may release the pins, a loose HAT may be reseated, so the
    daemon exits EX_UNAVAILABLE (69), which the unit restarts, instead of EX_CONFIG, which it never does."""


class ConfigError(SpeakerNodeError):
    """The configuration is invalid. `problems` lists every problem found, not only the first."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


EX_UNAVAILABLE = 69  # sysexits.h: service unavailable; restarted by Restart=on-failure
EX_CONFIG = 78  # sysexits.h: configuration error; systemd shows it as "status=78/CONFIG"
EX_TEMPFAIL = 75  # sysexits.h: temporary failure, try again (restarted by the unit)
