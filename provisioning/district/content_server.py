"""A small HTTPS content server for a district-in-a-box: serves a directory of signed audio to nodes.

Mutual TLS (nodes present their district-issued certificate), HTTP Range for resumed downloads. A real
district would put nginx or a CDN here; the node does not care, because every byte is hash-checked
against the signed command anyway.
"""

from __future__ import annotations

import re
import shutil
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server_version = "speaker-content/1"

    def do_GET(self):  # noqa: N802 - http.server naming
        root: Path = self.server.root
        name = self.path.split("?", 1)[0].lstrip("/")
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

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
