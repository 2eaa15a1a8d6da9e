"""Bounded, resumable, hash-verified HTTPS download of signed audio.

The caller hands over metadata the verifier (node.trust) already accepted: a URL, a SHA-256 and a length.
Everything the server says is treated as untrusted: the length cap is enforced while streaming (at most
one byte past the signed length is ever read), the hash is computed while streaming, and only a file whose
hash and length both match is handed back. What goes wrong is split the way node.errors splits it:

- RemoteDataError: the bytes (or what the server claims about them) contradict the signed metadata. The
  partial file is deleted: retrying the same server will not make wrong bytes right.
- TransportError: the link failed (timeouts, cuts, TLS errors, HTTP 5xx). The partial file is kept so a
  later fetch resumes with a Range request instead of paying for the whole file again over 4G.

Only stdlib http.client and ssl: one dependency less on a node, and every knob (timeouts per socket
operation, byte caps) is reachable.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import re
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urljoin, urlsplit

from node.errors import DeviceError, RemoteDataError, TransportError

# Stable reason codes (RemoteDataError.reason) this module emits.
HASH_MISMATCH = "audio_hash_mismatch"
LENGTH_MISMATCH = "audio_length_mismatch"
TOO_LARGE = "audio_too_large"
URL_REFUSED = "audio_url_refused"
TOO_MANY_REDIRECTS = "audio_too_many_redirects"

MAX_REDIRECTS = 3
USER_AGENT = "speaker-node-content/1"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class DownloadLimits:
    max_bytes: int
    connect_timeout: float = 10
    read_timeout: float = 30
    total_timeout: float = 600
    chunk: int = 65536
    max_attempts: int = 5


class DownloadCancelled(TransportError):
    """The caller set the cancel event; the partial file is kept for a later resume."""


def hash_file(path: str | os.PathLike, chunk: int = 1 << 20) -> tuple[str, int]:
    """SHA-256 hex digest and length of a file, read in fixed chunks so memory stays flat."""
    digest = hashlib.sha256()
    length = 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            length += n
    return digest.hexdigest(), length


def full_jitter(failures: int, *, base: float = 1.0, cap: float = 60.0,
                rng: Callable[[], float] = random.random) -> float:
    """AWS "full jitter": uniform in [0, min(cap, base * 2^n)) so many nodes cut at once spread out."""
    return rng() * min(cap, base * (2 ** max(0, failures - 1)))


def check_sha256_hex(value: str) -> str:
    """Normalised lower-case hex; a malformed digest is a caller bug (the verifier checked the format)."""
    value = value.lower()
    if not _SHA256_HEX.fullmatch(value):
        raise ValueError(f"not a SHA-256 hex digest: {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------------
# Pure decisions: what to do with a response, given where the partial file stands.


@dataclass(frozen=True)
class ContentRange:
    start: int
    end: int
    total: int | None


def parse_content_range(value: str | None) -> ContentRange | None:
    if not value:
        return None
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if not match:
        return None
    start, end = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if end < start:
        return None
    return ContentRange(start, end, total)


@dataclass(frozen=True)
class ResponseDecision:
    """action: "stream" (body starts at `start`, `body_length` if declared), "redirect" (to `location`),
    "retry" (transient; `discard_partial` when our prefix cannot be trusted to line up), "give_up"
    (a TransportError worth no retry now) or "reject" (RemoteDataError `reason`)."""

    action: str
    start: int = 0
    body_length: int | None = None
    location: str = ""
    discard_partial: bool = False
    reason: str = ""
    detail: str = ""


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def decide_response(status: int, headers: Mapping[str, str], offset: int, expected_length: int) -> ResponseDecision:
    """`offset` is how many verified-so-far bytes we hold (and asked the server to skip with Range)."""
    if status in (301, 302, 303, 307, 308):
        location = headers.get("Location", "")
        if not location:
            return ResponseDecision("retry", detail=f"HTTP {status} without Location")
        return ResponseDecision("redirect", location=location)
    if status == 200:
        declared = _content_length(headers)
        if declared is not None and declared != expected_length:
            return ResponseDecision("reject", reason=LENGTH_MISMATCH,
                            detail=f"server declares {declared} bytes, signed length is {expected_length}")
        # A 200 to a Range request means the server ignored it: start over from byte zero.
        return ResponseDecision("stream", start=0, body_length=declared, discard_partial=offset > 0)
    if status == 206:
        rng = parse_content_range(headers.get("Content-Range"))
        if rng is None or "multipart" in headers.get("Content-Type", ""):
            return ResponseDecision("retry", discard_partial=True, detail="unusable Content-Range")
        if rng.total is not None and rng.total != expected_length:
            return ResponseDecision("reject", reason=LENGTH_MISMATCH,
                            detail=f"server says total {rng.total}, signed length is {expected_length}")
        if rng.start != offset or rng.end >= expected_length:
            return ResponseDecision("retry", discard_partial=True,
                            detail=f"Content-Range {rng.start}-{rng.end} does not continue at {offset}")
        body = rng.end - rng.start + 1
        declared = _content_length(headers)
        if declared is not None and declared != body:
            return ResponseDecision("retry", discard_partial=True,
                            detail="Content-Length disagrees with Content-Range")
        return ResponseDecision("stream", start=offset, body_length=body)
    if status == 416:
        return ResponseDecision("retry", discard_partial=True, detail="HTTP 416: range not satisfiable")
    if status in (408, 425, 429) or status >= 500:
        return ResponseDecision("retry", detail=f"HTTP {status}")
    return ResponseDecision("give_up", detail=f"HTTP {status}")


# ---------------------------------------------------------------------------------------------------------
# IO: the downloader.


class _Retry(Exception):
    def __init__(self, detail: str, discard_partial: bool = False, stalled: bool = False):
        super().__init__(detail)
        self.discard_partial = discard_partial
        self.stalled = stalled  # a trickle: counts as a failure even though a few bytes arrived


class _Partial:
    """The .partial file and a running hash of exactly the bytes it holds."""

    def __init__(self, path: Path, expected_length: int, chunk: int):
        self.path = path
        self.digest = hashlib.sha256()
        self.size = 0
        self.from_disk = False
        if path.exists():
            size = path.stat().st_size
            if size > expected_length:
                path.unlink()
            elif size:
                # hashlib state cannot be saved portably, so the prefix is hashed again on every start.
                self.digest, self.size = _hash_prefix(path, chunk)
                self.from_disk = True

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.digest = hashlib.sha256()
        self.size = 0
        self.from_disk = False


def _hash_prefix(path: Path, chunk: int):
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while data := f.read(chunk):
            digest.update(data)
            size += len(data)
    return digest, size


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


class Downloader:
    """Mutual-TLS HTTPS client for signed audio; one instance per node, `fetch` may run in a worker."""

    def __init__(self, *, ca_file: str | None, cert_file: str | None, key_file: str | None,
                 limits: DownloadLimits, sleep: Callable[[float], None] | None = None,
                 backoff: Callable[[int], float] = full_jitter, allow_plain_http: bool = False,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.allow_plain_http = allow_plain_http
        # None: wait on the cancel event, so a shutdown is not held up by a 60 s backoff.
        self._sleep = sleep
        self._backoff = backoff
        self._clock = clock
        self._context = self._tls_context(ca_file, cert_file, key_file)
        self.context = self._context  # shared with live relays (node.content.live): one trust for both

    @staticmethod
    def _tls_context(ca_file, cert_file, key_file) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs()
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
        return context

    def fetch(self, url: str, dest_partial: Path, expected_sha256: str, expected_length: int,
              cancel: threading.Event | None = None,
              progress: Callable[[int, int], None] | None = None,
              stall: tuple[float, int] | None = None) -> Path:
        """Download into `dest_partial` (resuming it if present); return it once hash and length match.

        `stall` = (seconds, min_bytes): an attempt that receives fewer than min_bytes in any such window
        (silence included) is cut and retried like a dropped connection, and counts as a failed attempt
        even if a few bytes came: a server dripping a byte every few seconds runs out of attempts."""
        expected_sha256 = check_sha256_hex(expected_sha256)
        if expected_length < 0:
            raise ValueError("expected_length must be >= 0")
        if expected_length > self.limits.max_bytes:
            raise RemoteDataError(TOO_LARGE, f"{expected_length} bytes exceeds the cap of "
                                  f"{self.limits.max_bytes}", url=url)
        self._check_scheme(url, url)
        dest_partial = Path(dest_partial)
        dest_partial.parent.mkdir(parents=True, exist_ok=True)
        deadline = self._clock() + self.limits.total_timeout
        partial = _Partial(dest_partial, expected_length, self.limits.chunk)
        fresh_restart_left = True  # one clean re-download if a resumed file fails its hash
        # Consecutive attempts that got no further than any attempt before: a 4G link cut every few MB
        # still finishes a big file, while a server that keeps failing (or keeps making us start over)
        # runs out of attempts. The total timeout bounds the whole call either way.
        failures = 0
        high_water = partial.size
        while True:
            if partial.size == expected_length:
                if partial.digest.hexdigest() == expected_sha256:
                    dest_partial.touch(exist_ok=True)  # a signed empty file is still a file
                    _fsync_file(dest_partial)
                    return dest_partial
                if partial.from_disk and fresh_restart_left:
                    # The prefix may be stale or damaged by a power cut; the server gets one clean try.
                    fresh_restart_left = False
                    partial.discard()
                    high_water = 0
                    continue
                partial.discard()
                raise RemoteDataError(HASH_MISMATCH, f"SHA-256 of {expected_length} bytes from {url} does "
                                      "not match the signed hash", url=url)
            self._check_cancel(cancel)
            try:
                self._attempt(url, partial, expected_length, deadline, cancel, progress, stall)
                continue  # the loop top decides: complete, or a short body that needs another round
            except RemoteDataError as exc:
                if exc.reason in (HASH_MISMATCH, LENGTH_MISMATCH):
                    partial.discard()
                raise
            except _Retry as exc:
                if exc.discard_partial:
                    partial.discard()
                failures = 0 if partial.size > high_water and not exc.stalled else failures + 1
                high_water = max(high_water, partial.size)
                if failures >= self.limits.max_attempts:
                    raise TransportError(f"download of {url} failed {failures} times in a row: {exc}")
                self._pause(failures, deadline, cancel, str(exc))

    # -- one attempt -------------------------------------------------------------------------------------

    def _attempt(self, url, partial: _Partial, expected_length, deadline, cancel, progress, stall=None) -> None:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            conn = response = None
            try:
                conn, sock, response = self._request(current, partial.size, deadline)
                decision = decide_response(response.status, response.headers, partial.size, expected_length)
                if decision.action == "redirect":
                    location = urljoin(current, decision.location)
                    self._check_scheme(url, location)
                    current = location
                    continue
                if decision.action == "reject":
                    raise RemoteDataError(decision.reason, decision.detail, url=current)
                if decision.action == "give_up":
                    raise TransportError(f"{current}: {decision.detail}")
                if decision.action == "retry":
                    raise _Retry(decision.detail, decision.discard_partial)
                if decision.discard_partial:
                    partial.discard()
                self._stream(sock, response, partial, decision, expected_length, deadline, cancel,
                             progress, current, stall)
                return
            except ssl.SSLCertVerificationError as exc:
                # A wrong CA, name or validity period will not fix itself within a backoff: fail now.
                raise TransportError(f"{current}: server certificate refused: {exc.verify_message}") from exc
            except (OSError, http.client.HTTPException) as exc:
                raise _Retry(f"{type(exc).__name__}: {exc}") from exc
            finally:
                # The response holds the socket once the server said "Connection: close".
                if response is not None:
                    response.close()
                if conn is not None:
                    conn.close()
        raise RemoteDataError(TOO_MANY_REDIRECTS, f"more than {MAX_REDIRECTS} redirects from {url}", url=url)

    def _request(self, url, offset, deadline):
        parts = urlsplit(url)
        timeout = self._remaining(deadline, self.limits.connect_timeout)
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                               context=self._context)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.connect()  # TCP connect and TLS handshake, both under the connect timeout
            # Keep our own reference: with "Connection: close" http.client drops conn.sock once the
            # response owns the socket, and the read timeout must still be adjusted per read.
            sock = conn.sock
            sock.settimeout(self._remaining(deadline, self.limits.read_timeout))
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            headers = {"User-Agent": USER_AGENT, "Connection": "close"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            conn.request("GET", path, headers=headers)
            return conn, sock, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def _stream(self, sock, response, partial: _Partial, decision: ResponseDecision, expected_length, deadline,
                cancel, progress, url, stall=None) -> None:
        if decision.start == 0 and partial.size:
            partial.discard()
        cap = expected_length + 1  # one byte past the signed length is enough to know it is too long
        received = 0
        try:
            out = open(partial.path, "ab")
        except OSError as exc:
            raise DeviceError(f"cannot open {partial.path}: {exc}") from exc
        stall_s, stall_bytes = stall or (None, 0)
        window_start, window_bytes = self._clock(), 0
        with out:
            while True:
                self._check_cancel(cancel)
                per_read = self.limits.read_timeout
                if stall_s is not None and window_bytes < stall_bytes:
                    # Silence until the window ends is a stall too (once the window has its bytes, a read
                    # may wait the normal read timeout: a timeout then would be a real stall of its own).
                    per_read = min(per_read, max(0.05, window_start + stall_s - self._clock()))
                sock.settimeout(self._remaining(deadline, per_read))
                # read1: at most one socket read, so the deadline and cancel are checked on a slow drip.
                try:
                    data = response.read1(min(self.limits.chunk, cap - partial.size))
                except TimeoutError as exc:
                    if stall_s is not None and window_bytes < stall_bytes and self._clock() - window_start >= stall_s:
                        raise _Retry(f"stalled: {window_bytes} bytes in {stall_s:.1f} s", stalled=True) from exc
                    raise
                if not data:
                    break
                if partial.size + len(data) > expected_length:
                    raise RemoteDataError(LENGTH_MISMATCH, f"server sent more than the signed "
                                          f"{expected_length} bytes", url=url)
                try:
                    out.write(data)
                except OSError as exc:
                    raise DeviceError(f"cannot write {partial.path}: {exc}") from exc
                partial.digest.update(data)
                partial.size += len(data)
                received += len(data)
                window_bytes += len(data)
                if progress is not None:
                    progress(partial.size, expected_length)
                if stall_s is not None and self._clock() - window_start >= stall_s:
                    if window_bytes < stall_bytes and partial.size < expected_length:
                        raise _Retry(f"stalled: {window_bytes} bytes in {stall_s:.1f} s", stalled=True)
                    window_start, window_bytes = self._clock(), 0
        if decision.body_length is not None and received < decision.body_length:
            raise _Retry(f"connection closed after {received} of {decision.body_length} bytes")
        if partial.size < expected_length and decision.body_length is None:
            raise _Retry(f"connection closed at {partial.size} of {expected_length} bytes")

    # -- helpers ------------------------------------------------------------------------------------------

    def _check_scheme(self, original: str, url: str) -> None:
        scheme = urlsplit(url).scheme.lower()
        allowed = {"https", "http"} if self.allow_plain_http else {"https"}
        if scheme not in allowed:
            raise RemoteDataError(URL_REFUSED, f"scheme {scheme or '(none)'!r} not allowed", url=url)
        if scheme != urlsplit(original).scheme.lower():
            raise RemoteDataError(URL_REFUSED, f"redirect from {original} to {url} changes the scheme",
                                  url=url)
        if not urlsplit(url).hostname:
            raise RemoteDataError(URL_REFUSED, "URL has no host", url=url)

    def _remaining(self, deadline: float, per_operation: float) -> float:
        left = deadline - self._clock()
        if left <= 0:
            raise TransportError(f"download exceeded the total timeout of {self.limits.total_timeout} s")
        return min(per_operation, left)

    @staticmethod
    def _check_cancel(cancel: threading.Event | None) -> None:
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled("download cancelled; partial file kept")

    def _pause(self, failures: int, deadline: float, cancel, why: str) -> None:
        delay = self._backoff(failures)
        if self._clock() + delay >= deadline:
            raise TransportError(f"download exceeded the total timeout of {self.limits.total_timeout} s "
                                 f"(last error: {why})")
        if self._sleep is not None:
            self._sleep(delay)
        elif cancel is not None:
            cancel.wait(delay)
        else:
            time.sleep(delay)
        self._check_cancel(cancel)
