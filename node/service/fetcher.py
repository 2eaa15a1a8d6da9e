"""Download worker: one background thread fetches audio for the node loop and posts the outcome.

The thread only moves bytes into a partial file (node.content.download verifies hash and length
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


@dataclass(frozen=True)
class FetchJob:
    sha256: str
    url: str
    length: int
    content_id: str
    codec: str
    partial: Path


@dataclass(frozen=True)
class FetchDone:
    job: FetchJob
    path: Path | None        # the verified partial file, ready for cache.admit
    reason: str | None = None  # stable reason code when it failed
    detail: str = ""


class Fetcher:
    def __init__(self, downloader, post: Callable[[object], None]):
        self.downloader = downloader
        self.post = post
        self.pending: set[str] = set()  # sha256 queued or in progress (loop thread only)
        self._jobs: "queue.Queue[FetchJob | None]" = queue.Queue()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fetcher", daemon=True)
        self._thread.start()

    def request(self, job: FetchJob) -> bool:
        """Queue a download unless the same content is already on its way."""
        if job.sha256 in self.pending:
            return False
        self.pending.add(job.sha256)
        self._jobs.put(job)
        return True

    def finished(self, sha256: str) -> None:
        self.pending.discard(sha256)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._cancel.is_set():
                return
            try:
                path = self.downloader.fetch(job.url, job.partial, job.sha256, job.length, cancel=self._cancel)
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
        self._jobs.put(None)
        self._thread.join(5)
