"""Signed-audio download against a real mutual-TLS server that misbehaves on purpose."""

from __future__ import annotations

import hashlib
import http.client
import random
import threading
import tracemalloc
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from node.content.cache import ContentCache
from node.content.download import (
    HASH_MISMATCH,
    LENGTH_MISMATCH,
    TOO_LARGE,
    TOO_MANY_REDIRECTS,
    URL_REFUSED,
    DownloadCancelled,
    Downloader,
    DownloadLimits,
)
from node.errors import RemoteDataError, TransportError
from tests.https_server import Faults, TestHTTPSServer

pytestmark = pytest.mark.timeout(60)

SIZE = 300_000
CUT = 100_000


@pytest.fixture
def server(tmp_path):
    with TestHTTPSServer(tmp_path) as srv:
        yield srv


@pytest.fixture
def blob() -> bytes:
    return random.Random(7).randbytes(SIZE)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def downloader(server: TestHTTPSServer, *, ca_file="default", cert=True, sleeps=None, **limits) -> Downloader:
    settings = dict(max_bytes=200 * 1024 * 1024, connect_timeout=5, read_timeout=5, total_timeout=30,
                    max_attempts=3)
    settings.update(limits)
    return Downloader(
        ca_file=server.pki.ca_file if ca_file == "default" else ca_file,
        cert_file=server.pki.client_cert if cert else None,
        key_file=server.pki.client_key if cert else None,
        limits=DownloadLimits(**settings),
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
        backoff=lambda failures: 0.0,
    )


# -- happy paths and resumption -------------------------------------------------------------------------


def test_download_verifies_and_presents_node_certificate(server, blob, tmp_path):
    url = server.add("/a.ogg", blob)
    done = downloader(server).fetch(url, tmp_path / "a.partial", sha(blob), SIZE)
    assert done.read_bytes() == blob
    assert [(r.status, r.client_cn) for r in server.requests] == [(200, "27787-03")]


def test_download_cut_mid_file_resumes_with_range(server, blob, tmp_path):
    url = server.add("/a.ogg", blob, [Faults(cut_after=CUT), Faults()])
    sleeps: list[float] = []
    done = downloader(server, sleeps=sleeps).fetch(url, tmp_path / "a.partial", sha(blob), SIZE)
    assert done.read_bytes() == blob
    assert [(r.range, r.status) for r in server.requests] == [(None, 200), (f"bytes={CUT}-", 206)]
    assert len(sleeps) == 1  # backed off once before resuming


def test_partial_kept_after_transport_failure_and_resumed_by_next_fetch(server, blob, tmp_path):
    url = server.add("/a.ogg", blob, [Faults(cut_after=CUT), Faults(status=503)])
    partial = tmp_path / "a.partial"
    with pytest.raises(TransportError):
        downloader(server, max_attempts=2).fetch(url, partial, sha(blob), SIZE)
    assert partial.read_bytes() == blob[:CUT]
    server.add("/a.ogg", blob)  # the server recovers; a new fetch (e.g. after reboot) re-hashes the prefix
    done = downloader(server).fetch(url, partial, sha(blob), SIZE)
    assert done.read_bytes() == blob
    assert (server.requests[-1].range, server.requests[-1].status) == (f"bytes={CUT}-", 206)


def test_server_ignoring_range_restarts_cleanly(server, blob, tmp_path):
    url = server.add("/a.ogg", blob, [Faults(cut_after=CUT), Faults(ignore_range=True)])
    done = downloader(server).fetch(url, tmp_path / "a.partial", sha(blob), SIZE)
    assert done.read_bytes() == blob
    assert [(r.range, r.status) for r in server.requests] == [(None, 200), (f"bytes={CUT}-", 200)]


def test_wrong_content_range_discards_prefix_and_starts_over(server, blob, tmp_path):
    url = server.add("/a.ogg", blob, [Faults(cut_after=CUT), Faults(wrong_content_range=True), Faults()])
    done = downloader(server).fetch(url, tmp_path / "a.partial", sha(blob), SIZE)
    assert done.read_bytes() == blob
    assert [(r.range, r.status) for r in server.requests] == [
        (None, 200), (f"bytes={CUT}-", 206), (None, 200)]


def test_damaged_partial_prefix_gets_one_clean_redownload(server, blob, tmp_path):
    url = server.add("/a.ogg", blob)
    partial = tmp_path / "a.partial"
    partial.write_bytes(b"\x00" * 1000)  # e.g. blocks lost in a power cut
    done = downloader(server).fetch(url, partial, sha(blob), SIZE)
    assert done.read_bytes() == blob
    assert [r.range for r in server.requests] == ["bytes=1000-", None]


def test_redirect_is_followed_on_same_scheme(server, blob, tmp_path):
    real = server.add("/real.ogg", blob)
    url = server.add("/moved", b"", Faults(redirect_to=real))
    assert downloader(server).fetch(url, tmp_path / "a.partial", sha(blob), SIZE).read_bytes() == blob


def test_cancel_stops_download_and_keeps_partial(server, blob, tmp_path):
    url = server.add("/a.ogg", blob, Faults(drip_bytes=4096, drip_interval=0.01))
    cancel = threading.Event()
    partial = tmp_path / "a.partial"

    def progress(done, total):
        if done >= 8192:
            cancel.set()

    with pytest.raises(DownloadCancelled):
        downloader(server).fetch(url, partial, sha(blob), SIZE, cancel=cancel, progress=progress)
    assert 8192 <= partial.stat().st_size < SIZE
    assert blob.startswith(partial.read_bytes())


# -- wrong bytes ----------------------------------------------------------------------------------------


def test_server_sending_endless_data_is_cut_at_signed_length(server, blob, tmp_path, monkeypatch):
    url = server.add("/a.ogg", blob, Faults(endless=True))
    body_bytes_read = []
    real_read1 = http.client.HTTPResponse.read1

    def counting_read1(self, n=-1):
        data = real_read1(self, n)
        body_bytes_read.append(len(data))
        return data

    monkeypatch.setattr(http.client.HTTPResponse, "read1", counting_read1)
    seen = []
    with pytest.raises(RemoteDataError) as err:
        downloader(server).fetch(url, tmp_path / "a.partial", sha(blob), SIZE,
                                 progress=lambda done, total: seen.append(done))
    assert err.value.reason == LENGTH_MISMATCH
    assert sum(body_bytes_read) == SIZE + 1  # the one byte that proves it is too long, no more
    assert max(seen) <= SIZE
    assert not (tmp_path / "a.partial").exists()


def test_one_flipped_byte_is_rejected_and_nothing_cached(server, blob, tmp_path):
    cache = ContentCache(tmp_path / "cache", 10 * SIZE, tmp_path / "node.db")
    flipped = bytearray(blob)
    flipped[SIZE // 2] ^= 0x01
    url = server.add("/a.ogg", bytes(flipped))
    partial = cache.partial_path(sha(blob))
    with pytest.raises(RemoteDataError) as err:
        downloader(server).fetch(url, partial, sha(blob), SIZE)
    assert err.value.reason == HASH_MISMATCH
    assert not partial.exists()
    assert not cache.has(sha(blob)) and cache.usage() == 0
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    assert len(server.requests) == 1  # a fresh download with a bad hash is not retried


def test_truncated_file_is_rejected(server, blob, tmp_path):
    url = server.add("/a.ogg", blob[:-1000])  # honest Content-Length, but not the signed length
    with pytest.raises(RemoteDataError) as err:
        downloader(server).fetch(url, tmp_path / "a.partial", sha(blob), SIZE)
    assert err.value.reason == LENGTH_MISMATCH
    assert not (tmp_path / "a.partial").exists()


def test_truncated_file_behind_lying_content_length_never_completes(server, blob, tmp_path):
    url = server.add("/a.ogg", blob[:-1000], Faults(declared_length=SIZE))
    partial = tmp_path / "a.partial"
    with pytest.raises(TransportError):
        downloader(server, max_attempts=2).fetch(url, partial, sha(blob), SIZE)
    assert not partial.exists() or partial.stat().st_size < SIZE


def test_signed_length_above_cap_is_refused_before_connecting(server, blob, tmp_path):
    url = server.add("/a.ogg", blob)
    with pytest.raises(RemoteDataError) as err:
        downloader(server, max_bytes=SIZE - 1).fetch(url, tmp_path / "a.partial", sha(blob), SIZE)
    assert err.value.reason == TOO_LARGE
    assert server.requests == []


# -- slow, silent and dead servers ----------------------------------------------------------------------


def test_server_that_never_answers_times_out(server, blob, tmp_path):
    url = server.add("/a.ogg", blob, Faults(hang="response"))
    with pytest.raises(TransportError):
        downloader(server, read_timeout=0.5, max_attempts=2).fetch(url, tmp_path / "a.partial",
                                                                    sha(blob), SIZE)
    assert len(server.requests) == 2


def test_server_that_accepts_but_never_handshakes_times_out(server, blob, tmp_path):
    url = server.add("/a.ogg", blob)
    server.hang_on_accept()
    with pytest.raises(TransportError):
        downloader(server, connect_timeout=0.3, max_attempts=2).fetch(url, tmp_path / "a.partial",
                                                                        sha(blob), SIZE)
    assert server.requests == []


def test_slow_drip_is_cut_by_total_timeout(server, blob, tmp_path):
    url = server.add("/a.ogg", blob, Faults(drip_bytes=100, drip_interval=0.02))
    partial = tmp_path / "a.partial"
    with pytest.raises(TransportError, match="total timeout"):
        downloader(server, read_timeout=2, total_timeout=0.8).fetch(url, partial, sha(blob), SIZE)
    assert 0 < partial.stat().st_size < SIZE  # kept for a resume


# -- TLS ------------------------------------------------------------------------------------------------


def test_client_without_certificate_is_refused_by_server(server, blob, tmp_path):
    url = server.add("/a.ogg", blob)
    with pytest.raises(TransportError):
        downloader(server, cert=False, max_attempts=1).fetch(url, tmp_path / "a.partial", sha(blob), SIZE)
    # Refused by the server's CERT_REQUIRED, not by us; the server may record it after we returned.
    assert server.handshake_failed.wait(10), "the server never saw a failed handshake"
    assert server.requests == [] and server.handshake_failures


def test_wrong_ca_server_is_refused(server, blob, tmp_path):
    url = server.add("/a.ogg", blob)
    sleeps: list[float] = []
    with pytest.raises(TransportError, match="certificate"):
        downloader(server, ca_file=server.pki.other_ca_file, sleeps=sleeps).fetch(
            url, tmp_path / "a.partial", sha(blob), SIZE)
    assert server.requests == []
    assert sleeps == []  # a certificate that fails verification is not retried within the call


def test_server_certificate_for_another_name_is_refused(tmp_path, blob):
    with TestHTTPSServer(tmp_path, server_names=["content.example.vn"]) as other:
        url = other.add("/a.ogg", blob)
        with pytest.raises(TransportError, match="certificate"):
            downloader(other).fetch(url, tmp_path / "a.partial", sha(blob), SIZE)
        assert other.requests == []


# -- URLs -----------------------------------------------------------------------------------------------


def test_plain_http_refused_by_default(server, blob, tmp_path):
    with pytest.raises(RemoteDataError) as err:
        downloader(server).fetch("http://127.0.0.1:9/a.ogg", tmp_path / "a.partial", sha(blob), SIZE)
    assert err.value.reason == URL_REFUSED


def test_plain_http_works_when_allowed(tmp_path, blob):
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.ogg").write_bytes(blob)

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        client = Downloader(ca_file=None, cert_file=None, key_file=None, allow_plain_http=True,
                            limits=DownloadLimits(max_bytes=SIZE, read_timeout=5))
        url = f"http://127.0.0.1:{httpd.server_address[1]}/a.ogg"
        assert client.fetch(url, tmp_path / "a.partial", sha(blob), SIZE).read_bytes() == blob
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_redirect_to_plain_http_is_refused(server, blob, tmp_path):
    url = server.add("/moved", b"", Faults(redirect_to="http://127.0.0.1:9/a.ogg"))
    with pytest.raises(RemoteDataError) as err:
        downloader(server).fetch(url, tmp_path / "a.partial", sha(blob), SIZE)
    assert err.value.reason == URL_REFUSED


def test_redirect_loop_stops_after_three(server, blob, tmp_path):
    url = server.add("/loop", b"", Faults(redirect_to="/loop"))
    with pytest.raises(RemoteDataError) as err:
        downloader(server).fetch(url, tmp_path / "a.partial", sha(blob), SIZE)
    assert err.value.reason == TOO_MANY_REDIRECTS
    assert len(server.requests) == 4  # the request and three redirects


# -- memory ---------------------------------------------------------------------------------------------


def test_memory_stays_flat_for_50_mb_download(server, tmp_path):
    size = 50 * 1024 * 1024
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    rng = random.Random(3)
    with open(source, "wb") as f:
        for _ in range(size // (1 << 20)):
            piece = rng.randbytes(1 << 20)
            digest.update(piece)
            f.write(piece)
    url = server.add("/big.ogg", Path(source))  # streamed from disk by the server, 64 KiB at a time
    client = downloader(server)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        done = client.fetch(url, tmp_path / "big.partial", digest.hexdigest(), size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done.stat().st_size == size
    assert peak < 2 * 1024 * 1024, f"peak traced memory {peak} bytes"
