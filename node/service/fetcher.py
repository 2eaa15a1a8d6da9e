"""Download workers: background threads fetch audio for the node loop and post the outcome.

Two lanes, one worker each (bounded concurrency: at most two downloads at once): emergencies have a
worker of their own, so an emergency's audio never waits behind another download, however slowly a
bulletin trickles in. Each level has its own stall timeout: a download that delivers less than
`STALL_MIN_BYTES` within it is cut and resumed (a range request) after a backoff, like a dropped
connection, so a server dripping one byte every few seconds cannot hold a worker for the 600 s total.

The threads only move bytes into a partial file (node.content.download verifies hash and length
while streaming); admitting the file into the cache happens on the loop thread, which owns the cache.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from node.errors import RemoteDataError, TransportError

log = logging.getLogger(__name__)

URGENT, NORMAL = "urgent", "normal"
# Seconds a download may go on delivering less than STALL_MIN_BYTES before it counts as stalled.
STALL_TIMEOUT_S = {"emergency": 10.0, "priority": 20.0, "normal": 60.0}
STALL_MIN_BYTES = 4096


@dataclass(frozen=True)
class FetchJob:
    sha256: str
    url: str
    length: int
    content_id: str
    codec: str
    partial: Path
    level: str = "normal"  # emergency | priority | normal: picks the lane and the stall timeout


@dataclass(frozen=True)
class FetchDone:
    job: FetchJob
    path: Path | None        # the verified partial file, ready for cache.admit
    reason: str | None = None  # stable reason code when it failed
    detail: str = ""


def lane_for(level: str) -> str:
    return URGENT if level == "emergency" else NORMAL


class Fetcher:
    def __init__(self, downloader, post: Callable[[object], None], *, stall_timeouts: dict | None = None,
                 stall_min_bytes: int = STALL_MIN_BYTES):
        self.downloader = downloader
        self.post = post
        self.stall_timeouts = dict(STALL_TIMEOUT_S, **(stall_timeouts or {}))
        self.stall_min_bytes = stall_min_bytes
        self.pending: dict[str, str] = {}  # sha256 -> lane, queued or in progress (loop thread only)
        self._jobs: dict[str, queue.Queue[FetchJob | None]] = {URGENT: queue.Queue(), NORMAL: queue.Queue()}
        self._cancel = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(lane,), name=f"fetcher-{lane}", daemon=True)
                         for lane in (URGENT, NORMAL)]
        for thread in self._threads:
            thread.start()

    def request(self, job: FetchJob) -> bool:
        """Queue a download unless the same content is already on its way."""
        lane = lane_for(job.level)
        if job.sha256 in self.pending:
            if lane == URGENT and self.pending[job.sha256] == NORMAL:
                # An emergency needs content a normal download is fetching (perhaps trickling): fetch it
                # again in the emergency lane, into its own partial file; the first to finish is admitted.
                job = FetchJob(job.sha256, job.url, job.length, job.content_id, job.codec,
                               job.partial.with_name(job.partial.name + ".urgent"), job.level)
                self.pending[job.sha256] = URGENT
                self._jobs[URGENT].put(job)
                return True
            return False
        self.pending[job.sha256] = lane
        self._jobs[lane].put(job)
        return True

    def finished(self, sha256: str) -> None:
        self.pending.pop(sha256, None)

    def _run(self, lane: str) -> None:
        jobs = self._jobs[lane]
        while True:
            job = jobs.get()
            if job is None or self._cancel.is_set():
                return
            try:
                path = self.downloader.fetch(job.url, job.partial, job.sha256, job.length, cancel=self._cancel,
                                             stall=(self.stall_timeouts.get(job.level, STALL_TIMEOUT_S["normal"]),
                                                    self.stall_min_bytes))
                self.post(FetchDone(job, path))
            except RemoteDataError as exc:
                self.post(FetchDone(job, None, exc.reason, exc.detail))
            except TransportError as exc:
                self.post(FetchDone(job, None, "download_failed", str(exc)[:200]))
            except Exception as exc:  # noqa: BLE001 - a worker must never die silently
                log.exception("download of %s failed", job.url)
                self.post(FetchDone(job, None, "download_failed", f"{type(exc).__name__}: {exc}"[:200]))

    def close(self) -> None:
        self._cancel.set()
        for jobs in self._jobs.values():
            jobs.put(None)
        for thread in self._threads:
            thread.join(5)
