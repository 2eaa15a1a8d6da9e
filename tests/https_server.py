"""A threaded mutual-TLS HTTPS server on 127.0.0.1 that serves byte blobs and misbehaves on request.

    with TestHTTPSServer(tmp_path) as server:
        url = server.add("/a.ogg", data, Faults(cut_after=1000))
        Downloader(ca_file=server.pki.ca_file, cert_file=server.pki.client_cert, ...).fetch(url, ...)

It uses a throwaway district PKI from provisioning.pki and requires a client certificate (CERT_REQUIRED),
so tests exercise the same handshake a node does. The TLS handshake runs in the per-connection thread,
so a client that never finishes it cannot stall the accept loop. Every hanging or dripping handler waits
on a stop event, and `close()` also shuts down live sockets: the server always stops within a second.
"""

from __future__ import annotations

import itertools
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn

from provisioning import pki

SEND_CHUNK = 65536
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Faults:
    """Misbehaviour for one response. `add()` takes one (for every request) or a list (the n-th request
    gets the n-th entry, the last one repeating), e.g. [Faults(cut_after=1000), Faults()] cuts once."""

    cut_after: int | None = None       # close the TCP connection (no TLS close_notify) after N body bytes
    status: int | None = None           # answer this status with an empty body (503, 404, ...)
    endless: bool = False               # no Content-Length; after the blob, send filler until the client goes
    hang: str | None = None             # "accept": never do the TLS handshake; "response": read, never answer
    ignore_range: bool = False          # always answer 200 with the whole blob
    wrong_content_range: bool = False   # 206 whose Content-Range claims a start of 0 but sends from offset
    drip_bytes: int | None = None       # send this many bytes every drip_interval seconds
    drip_interval: float = 0.05
    declared_length: int | None = None  # lie about Content-Length (and the Content-Range total)
    redirect_to: str | None = None      # answer 302 with this Location


@dataclass
class Blob:
    source: bytes | Path
    script: list[Faults]
    served: int = 0

    def next_faults(self) -> Faults:
        faults = self.script[min(self.served, len(self.script) - 1)]
        self.served += 1
        return faults

    @property
    def length(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size

    def chunks(self, start: int, end: int):
        """Yield [start, end) in SEND_CHUNK pieces without copying the whole blob."""
        if isinstance(self.source, bytes):
            view = memoryview(self.source)
            for pos in range(start, end, SEND_CHUNK):
                yield view[pos:min(end, pos + SEND_CHUNK)]
            return
        with open(self.source, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                data = f.read(min(SEND_CHUNK, left))
                if not data:
                    return
                left -= len(data)
                yield data


@dataclass
class TestPKI:
    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca_file: str  # a CA that signed nothing here: a client trusting it must refuse our server


def make_pki(directory: Path, server_names: list[str] | None = None) -> TestPKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = pki.create_ca("test district CA")
    names = server_names or ["127.0.0.1", "localhost"]
    server_key, server_cert = pki.issue_server_cert(ca_key, ca_cert, names)
    client_key, client_cert = pki.issue_client_cert(ca_key, ca_cert, "27787-03")
    _, other_ca = pki.create_ca("some other CA")
    paths = {name: str(directory / name) for name in
             ("ca.crt", "server.crt", "server.key", "client.crt", "client.key", "other-ca.crt")}
    pki.write_cert(paths["ca.crt"], ca_cert)
    pki.write_cert(paths["server.crt"], server_cert)
    pki.write_private_key(paths["server.key"], server_key)
    pki.write_cert(paths["client.crt"], client_cert)
    pki.write_private_key(paths["client.key"], client_key)
    pki.write_cert(paths["other-ca.crt"], other_ca)
    return TestPKI(paths["ca.crt"], paths["server.crt"], paths["server.key"], paths["client.crt"],
                   paths["client.key"], paths["other-ca.crt"])


@dataclass
class RequestRecord:
    path: str
    range: str | None
    status: int
    client_cn: str | None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # a client that connects and says nothing cannot keep a thread forever

    def do_GET(self):  # noqa: N802 (http.server naming)
        self.server.owner._serve(self)

    def log_message(self, format, *args):  # noqa: A002
        pass


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, owner: TestHTTPSServer):
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request, client_address):
        # Runs in the connection's own thread: the handshake (or a deliberate hang) blocks only it.
        owner = self.owner
        owner._track(request)
        try:
            if owner._hang_accept:
                owner._stop.wait()
                return
            try:
                request.settimeout(5)
                tls = owner.context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                owner.handshake_failures.append(str(exc))
                owner.handshake_failed.set()
                return
            owner._track(tls)
            try:
                super().finish_request(tls, client_address)
            finally:
                # process_request_thread closes only the raw socket, which wrap_socket detached.
                owner._untrack(tls)
                self.shutdown_request(tls)
        finally:
            owner._untrack(request)

    def handle_error(self, request, client_address):
        pass  # clients cut by design; tests assert on records, not on stderr noise


class TestHTTPSServer:
    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path, *, server_names: list[str] | None = None):
        self.pki = make_pki(Path(directory) / "pki", server_names)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        self.context.load_verify_locations(self.pki.ca_file)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.blobs: dict[str, Blob] = {}
        self.requests: list[RequestRecord] = []
        self.handshake_failures: list[str] = []
        # TLS 1.3: the client may finish its side before the server rejects its certificate, so a test
        # waits for this event rather than reading handshake_failures right after the client returns.
        self.handshake_failed = threading.Event()
        self._hang_accept = False
        self._stop = threading.Event()
        self._live: set = set()
        self._lock = threading.Lock()
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-https", daemon=True)
        self._thread.start()

    # -- registration ------------------------------------------------------------------------------------

    def add(self, path: str, source: bytes | Path, faults: Faults | list[Faults] | None = None) -> str:
        """Serve `source` (bytes, or a file streamed from disk) at `path`; returns the https URL."""
        script = faults if isinstance(faults, list) else [faults or Faults()]
        self.blobs[path] = Blob(source, script)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def hang_on_accept(self, enabled: bool = True) -> None:
        """Accept TCP connections but never start TLS (a dead server behind a live load balancer)."""
        self._hang_accept = enabled

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        with self._lock:
            live = list(self._live)
        for sock in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()  # joins the handler threads (block_on_close)
        self._thread.join(timeout=5)

    def __enter__(self) -> TestHTTPSServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _track(self, sock) -> None:
        with self._lock:
            self._live.add(sock)

    def _untrack(self, sock) -> None:
        with self._lock:
            self._live.discard(sock)

    # -- serving -----------------------------------------------------------------------------------------

    def _serve(self, h: _Handler) -> None:
        blob = self.blobs.get(h.path)
        range_header = h.headers.get("Range")
        peer = h.connection.getpeercert() or {}
        cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), None)

        def record(status: int) -> None:
            self.requests.append(RequestRecord(h.path, range_header, status, cn))

        if blob is None:
            record(404)
            h.send_error(404)
            return
        f = blob.next_faults()
        if f.status is not None:
            record(f.status)
            h.send_response(f.status)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if f.hang == "response":
            record(0)
            self._stop.wait()
            h.close_connection = True
            return
        if f.redirect_to:
            record(302)
            h.send_response(302)
            h.send_header("Location", f.redirect_to)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return

        length = blob.length
        start = 0
        match = _RANGE.fullmatch(range_header or "")
        if match and not f.ignore_range:
            start = int(match[1])
            if start >= length:
                record(416)
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{length}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
        status = 206 if start else 200
        record(status)
        h.send_response(status)
        declared_total = f.declared_length if f.declared_length is not None else length
        if status == 206:
            shown_start = 0 if f.wrong_content_range else start
            h.send_header("Content-Range", f"bytes {shown_start}-{declared_total - 1}/{declared_total}")
        if f.endless:
            h.send_header("Connection", "close")
        else:
            h.send_header("Content-Length", str(declared_total - start))
        h.end_headers()
        h.close_connection = True

        cut_at = f.cut_after
        pieces = blob.chunks(start, length)
        if f.endless:
            pieces = itertools.chain(pieces, itertools.repeat(b"\x00" * SEND_CHUNK))
        sent = 0
        try:
            for piece in pieces:
                if self._stop.is_set():
                    return
                if cut_at is not None and sent + len(piece) >= cut_at:
                    h.wfile.write(piece[:cut_at - sent])
                    h.wfile.flush()
                    self._cut(h)
                    return
                if f.drip_bytes:
                    for pos in range(0, len(piece), f.drip_bytes):
                        if self._stop.wait(f.drip_interval):
                            return
                        h.wfile.write(piece[pos:pos + f.drip_bytes])
                        h.wfile.flush()
                else:
                    h.wfile.write(piece)
                sent += len(piece)
            h.wfile.flush()
        except OSError:
            return  # the client went away (the normal end of an endless response)

    @staticmethod
    def _cut(h: _Handler) -> None:
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)  # TCP-level close, no TLS close_notify: a real cut
        except OSError:
            pass

