"""Live relays read by the node itself: https with the district CA and our client certificate, bytes
handed to libVLC through a local pipe.

Why not give libVLC the URL: libVLC verifies https only against the system CAs and presents no client
certificate, so an https live URL on the district CA never played and districts fell back to plain
http, where whoever sits on the network path chooses what the loudspeakers say. A live stream has no
signed hash; the TLS session is its only authentication. So the node opens it with the same TLS
context as audio downloads (node.content.download.tls_context), and libVLC reads `fd://N`, the read
end of a pipe: it never opens a network connection.

A stream that stays connected but sends nothing for `stall_timeout` seconds is cut (the pipe is
closed: libVLC sees the end of its input), exactly as if the server had dropped it, so the on-air
relay logic reconnects within its grace window and then ends and records the relay.
"""

from __future__ import annotations

import http.client
import logging
import os
import select
import socket
import ssl
import threading
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

USER_AGENT = "speaker-node-live/1"
CHUNK = 16384


class LiveStream:
    """One connection to one live URL, read on its own thread into a pipe that libVLC reads.

    `failure` says why the input ended ("stalled", "http 404", "tls: ...", "ended"), None while it
    runs. The pipe (64 KiB in the kernel) is the only buffer: when libVLC does not read, the reader
    waits, so memory stays flat whatever the stream's rate."""

    def __init__(self, url: str, context: ssl.SSLContext, *, stall_timeout: float = 5.0,
                 connect_timeout: float = 10.0):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"live streams are https only: {url[:80]}")
        self.url, self._parts = url, parts
        self._context = context
        self.stall_timeout, self.connect_timeout = stall_timeout, connect_timeout
        self.failure: str | None = None
        self.bytes_read = 0
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._closed = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="live-stream", daemon=True)
        self._thread.start()

    @property
    def mrl(self) -> str:
        return f"fd://{self.read_fd}"

    # --- reader thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        conn = None
        try:
            conn = http.client.HTTPSConnection(self._parts.hostname, self._parts.port,
                                               timeout=self.connect_timeout, context=self._context)
            conn.connect()
            self._sock = conn.sock
            path = self._parts.path or "/"
            if self._parts.query:
                path += "?" + self._parts.query
            conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Connection": "close"})
            conn.sock.settimeout(self.stall_timeout)
            response = conn.getresponse()
            if response.status != 200:
                self.failure = f"http {response.status}"
                return
            while not self._closed.is_set():
                data = response.read1(CHUNK)
                if not data:
                    self.failure = "ended"
                    return
                self.bytes_read += len(data)
                if not self._write_all(data):
                    return
        except TimeoutError:
            self.failure = "stalled" if self.bytes_read or self._sock is not None else "connect timeout"
        except ssl.SSLCertVerificationError as exc:
            self.failure = f"tls: {exc.verify_message}"
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            if not self._closed.is_set():
                self.failure = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            if self.failure and not self._closed.is_set():
                log.warning("live stream %s: %s", self.url[:120], self.failure)
            if conn is not None:
                conn.close()
            try:
                os.close(self._write_fd)  # libVLC reads the end of its input
            except OSError:
                pass

    def _write_all(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            if self._closed.is_set():
                return False
            # Wait for libVLC to read; a consumer that stops reading for the stall window is stalled too.
            _, writable, _ = select.select([], [self._write_fd], [], min(0.5, self.stall_timeout))
            if not writable:
                continue
            try:
                view = view[os.write(self._write_fd, view):]
            except BlockingIOError:
                continue
            except OSError:  # libVLC closed its end
                return False
        return True

    # --- owner (player) --------------------------------------------------------------------------
    def end_input(self) -> None:
        """Stop reading: wakes the reader (shutting its socket down); it closes the pipe's write end,
        so libVLC reads the end of its input. Call before stopping libVLC's player."""
        self._closed.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(2.0)

    def close(self) -> None:
        """After libVLC released the media: our read end goes too."""
        self.end_input()
        if self.read_fd >= 0:
            try:
                os.close(self.read_fd)
            except OSError:
                pass
            self.read_fd = -1


class LiveOpener:
    """Opens LiveStreams with one TLS context (the downloads' trust); the player's only way to the network."""

    def __init__(self, context: ssl.SSLContext, *, stall_timeout: float = 5.0, connect_timeout: float = 10.0):
        self.context, self.stall_timeout, self.connect_timeout = context, stall_timeout, connect_timeout

    def __call__(self, url: str, stall_timeout: float | None = None) -> LiveStream:
        return LiveStream(url, self.context, stall_timeout=stall_timeout or self.stall_timeout,
                          connect_timeout=self.connect_timeout)
