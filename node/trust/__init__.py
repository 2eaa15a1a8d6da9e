"""Trust core: DSSE envelopes, the trust document, command parsing, the pure verifier, clock trust.

Import the verifier from here; everything in this package is pure (no IO except manifest file reads and
load_trust_file), so it can be tested with bytes and fixed times.
"""

from node.trust.commands import DEFAULT_LIMITS, Command, Limits, parse_command
from node.trust.envelope import PAYLOAD_COMMAND, PAYLOAD_TRUST, pae
from node.trust.manifest import verify_audio_file
from node.trust.time_trust import ClockPolicy, ClockTrust
from node.trust.trustdoc import TrustDocument, load_trust_file, verify_trust_update
from node.trust.verifier import Accepted, Rejected, TrustAccepted, verify_command, verify_message

__all__ = [
    "Accepted", "ClockPolicy", "ClockTrust", "Command", "DEFAULT_LIMITS", "Limits", "PAYLOAD_COMMAND",
    "PAYLOAD_TRUST", "Rejected", "TrustAccepted", "TrustDocument", "load_trust_file", "pae", "parse_command",
    "verify_audio_file", "verify_command", "verify_message", "verify_trust_update",
]
