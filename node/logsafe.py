"""Log lines that remote text cannot forge.

A keyid, topic, detail or URL from a message can carry a newline or a terminal escape; written into
the journal as is, "\\nINFO node.service.intake: accepted play ..." would read as a line the node
never logged. Every record's message is escaped once, at the handler (so no call site can forget),
and the lines of a traceback are marked as its continuation.
"""

from __future__ import annotations

import logging
import re

# C0 controls (newline and tab included), DEL, C1 controls, and the Unicode line/paragraph separators
# that some viewers break lines on.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_one(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` on one line: every control character as a visible \\xNN (\\uNNNN) escape."""
    return _CONTROLS.sub(_escape_one, text)


class EscapingFormatter(logging.Formatter):
    """A Formatter whose message part is always one line; traceback lines start with '| '."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        return _continuation(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _continuation(super().formatStack(stack_info))


def _continuation(text: str) -> str:
    return "\n".join("| " + escape_controls(line) for line in text.splitlines())
