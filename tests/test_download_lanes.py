"""Emergency first (issue 13, item 4): an emergency's audio never waits behind another download, and a
download that trickles is cut by its level's stall timeout. Real mutual-TLS HTTPS server; the tests wait
for events (which download finished first), never on wall-time thresholds."""

from __future__ import annotations

import hashlib
import os
import queue

import pytest
from support import wait_until

from node.content.download import Downloader, DownloadLimits
from node.errors import TransportError
from node.service.fetcher import FetchDone, Fetcher, FetchJob
from tests.https_server import Faults, TestHTTPSServer


@pytest.fixture
def server(tmp_path):
    with TestHTTPSServer(tmp_path) as s:
        yield s


def downloader(server, **limits) -> Downloader:
    settings = dict(max_bytes=10 * 1024 * 1024, connect_timeout=5, read_timeout=30, total_timeout=600,
                    max_attempts=5)
    settings.update(limits)
    return Downloader(ca_file=server.pki.ca_file, cert_file=server.pki.client_cert, key_file=server.pki.client_key,
                      limits=DownloadLimits(**settings), sleep=lambda s: None, backoff=lambda failures: 0.0)


def job(tmp_path, server, name, data, level, faults=None) -> FetchJob:
    url = server.add(f"/{name}", data, faults)
    sha = hashlib.sha256(data).hexdigest()
    return FetchJob(sha, url, len(data), name, "wav", tmp_path / f"{sha}.partial", level)


def wait_for_request(server, path, count=1, timeout=15.0):
    wait_until(lambda: sum(1 for r in server.requests if r.path == path) >= count, timeout, interval=0.01)


def test_emergency_download_does_not_wait_behind_a_trickling_bulletin(tmp_path, server):
    """A bulletin download trickling one byte every 2 s holds a worker; an emergency accepted after it
    started is downloaded (and could play) while the bulletin is still trickling."""
    done: queue.Queue[FetchDone] = queue.Queue()
    fetcher = Fetcher(downloader(server), done.put)
    try:
        bulletin = job(tmp_path, server, "ban-tin.wav", os.urandom(64 * 1024), "normal",
                       Faults(drip_bytes=1, drip_interval=2.0))
        emergency = job(tmp_path, server, "khan-cap.wav", os.urandom(48 * 1024), "emergency")
        assert fetcher.request(bulletin)
        wait_for_request(server, "/ban-tin.wav")
        assert fetcher.request(emergency)
        first = done.get(timeout=30)
        assert first.job.content_id == "khan-cap.wav" and first.path is not None and first.reason is None
        assert done.empty()  # the bulletin is still trickling
        assert hashlib.sha256(first.path.read_bytes()).hexdigest() == emergency.sha256
    finally:
        fetcher.close()


def test_emergency_refetches_content_that_a_trickling_download_holds(tmp_path, server):
    """The same audio as a trickling bulletin: the emergency lane fetches it again into its own partial
    file instead of waiting for the slow one."""
    done: queue.Queue[FetchDone] = queue.Queue()
    fetcher = Fetcher(downloader(server), done.put)
    try:
        data = os.urandom(32 * 1024)
        slow = job(tmp_path, server, "same.wav", data, "normal", [Faults(drip_bytes=1, drip_interval=2.0), Faults()])
        assert fetcher.request(slow)
        wait_for_request(server, "/same.wav")
        urgent = FetchJob(slow.sha256, slow.url, slow.length, "same.wav", "wav", slow.partial, "emergency")
        assert fetcher.request(urgent)
        first = done.get(timeout=30)
        assert first.job.level == "emergency" and first.path is not None
        assert first.path != slow.partial and first.path.read_bytes() == data
        assert not fetcher.request(urgent)  # one emergency fetch of it is enough
    finally:
        fetcher.close()


def test_trickling_download_is_cut_by_its_stall_timeout(tmp_path, server):
    """A server that keeps the connection alive with a byte now and then: each attempt is cut once its
    stall window passes with too few bytes, and the download fails after max_attempts (it would have
    held the worker for the 600 s total timeout)."""
    data = os.urandom(16 * 1024)
    url = server.add("/drip.wav", data, Faults(drip_bytes=1, drip_interval=0.1))
    d = downloader(server, max_attempts=2)
    with pytest.raises(TransportError, match="stalled"):
        d.fetch(url, tmp_path / "drip.partial", hashlib.sha256(data).hexdigest(), len(data), stall=(0.6, 1024))
    requests = [r for r in server.requests if r.path == "/drip.wav"]
    assert len(requests) == 2 and requests[1].range is not None  # resumed where the trickle got to


def test_silent_server_counts_as_stalled(tmp_path, server):
    data = os.urandom(16 * 1024)
    url = server.add("/silent.wav", data, Faults(drip_bytes=1, drip_interval=30.0))
    d = downloader(server, max_attempts=1)
    with pytest.raises(TransportError, match="stalled"):
        d.fetch(url, tmp_path / "silent.partial", hashlib.sha256(data).hexdigest(), len(data), stall=(0.5, 1))


def test_steady_download_is_not_cut_by_the_stall_timeout(tmp_path, server):
    data = os.urandom(8 * 1024)
    url = server.add("/steady.wav", data, Faults(drip_bytes=1024, drip_interval=0.05))
    path = downloader(server, max_attempts=1).fetch(url, tmp_path / "steady.partial",
                                                    hashlib.sha256(data).hexdigest(), len(data), stall=(0.3, 1024))
    assert path.read_bytes() == data


def test_each_level_has_its_own_stall_timeout():
    from node.service.fetcher import STALL_TIMEOUT_S, lane_for

    assert STALL_TIMEOUT_S["emergency"] < STALL_TIMEOUT_S["priority"] < STALL_TIMEOUT_S["normal"]
    assert lane_for("emergency") != lane_for("normal") == lane_for("priority")
