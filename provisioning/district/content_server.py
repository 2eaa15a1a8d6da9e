"""A small HTTPS content server for a district-in-a-box: serves a directory of signed audio to nodes.

Mutual TLS (nodes present their district-issued certificate), HTTP Range for resumed downloads. A real
district would put nginx or a CDN here; the node does not care, because every byte is hash-checked
against the signed command anyway.

It also relays live streams (`publish_live`): a file's bytes sent at a steady rate with no
Content-Length, as a radio relay would, optionally going silent (connected, no bytes) after some
bytes. For live audio the mutual TLS session is what authenticates the bytes. Every request is
recorded with the client certificate's CN (`requests`).
"""

from __future__ import annotations

import re
import shutil
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class LiveFeed:
    source: Path
    bytes_per_s: float
    silent_after: int | None = None  # stop sending (keep the connection) after this many bytes
    connections: int = 0              # later connections to a feed with silent_after get no bytes at all


class _Handler(BaseHTTPRequestHandler):
    server_version = "speaker-content/1"

    def do_GET(self):  # noqa: N802 - http.server naming
        root: Path = self.server.root
        name = self.path.split("?", 1)[0].lstrip("/")
        peer = self.connection.getpeercert() or {}
        cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), None)
        self.server.requests.append((name, cn))
        feed = self.server.live.get(name)
        if feed is not None:
            self._relay(feed)
            return
        path = (root / name).resolve()
        if root not in path.parents or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size
        m = _RANGE.match(self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            end = min(size, int(m.group(2)) + 1) if m.group(2) else size
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(65536, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def _relay(self, feed: LiveFeed) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = max(512, int(feed.bytes_per_s / 20))
        sent, started = 0, time.monotonic()
        stopping = self.server.stopping
        feed.connections += 1
        silent_after = feed.silent_after if feed.connections == 1 else (0 if feed.silent_after is not None else None)
        try:
            with open(feed.source, "rb") as f:
                while not stopping.is_set():
                    if silent_after is not None and sent >= silent_after:
                        stopping.wait(60)  # connected, silent: a stalled relay
                        return
                    size = chunk if silent_after is None else min(chunk, silent_after - sent)
                    data = f.read(size)
                    if not data:
                        return
                    self.wfile.write(data)
                    self.wfile.flush()
                    sent += len(data)
                    ahead = started + sent / feed.bytes_per_s - time.monotonic()
                    if ahead > 0:
                        stopping.wait(ahead)
        except OSError:
            return  # the node went away

    def log_message(self, format, *args):  # noqa: A002 - quiet; the demo prints its own timeline
        pass


class ContentServer:
    def __init__(self, workspace: str | Path, root: str | Path, host: str = "127.0.0.1", port: int = 0):
        tls = Path(workspace) / "tls"
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(tls / "broker.crt"), str(tls / "broker.key"))
        ctx.load_verify_locations(cafile=str(tls / "ca.crt"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.root = self.root
        self.httpd.live = {}
        self.httpd.requests = []
        self.httpd.stopping = threading.Event()
        self.host = host
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="content-server", daemon=True)

    def start(self) -> "ContentServer":
        self._thread.start()
        return self

    def publish(self, source: str | Path, name: str | None = None) -> str:
        """Copy a file into the served directory; returns its URL."""
        name = name or Path(source).name
        shutil.copyfile(source, self.root / name)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"https://{self.host}:{self.port}/{name}"

    def publish_live(self, source: str | Path, name: str, *, bytes_per_s: float | None = None,
                     silent_after: int | None = None) -> str:
        """Relay `source` as a live stream at `bytes_per_s` (default: a WAV file's own byte rate, i.e.
        real time); `silent_after` bytes, the connection stays open and nothing more comes (and any
        later connection gets its headers and then nothing: a relay that hangs)."""
        source = Path(source)
        if bytes_per_s is None:
            import wave

            with wave.open(str(source)) as w:
                bytes_per_s = w.getframerate() * w.getnchannels() * w.getsampwidth()
        self.httpd.live[name] = LiveFeed(source, float(bytes_per_s), silent_after)
        return self.url(name)

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        """(name, client certificate CN) of every request so far."""
        return list(self.httpd.requests)

    def stop(self) -> None:
        self.httpd.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
