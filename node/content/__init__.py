"""Signed-audio delivery: resumable verified HTTPS download (download.py) and the content cache (cache.py).

Typical use by the download worker, with metadata node.trust already verified:

    partial = cache.partial_path(sha256)
    done = downloader.fetch(url, partial, sha256, length, cancel=stop_event)
    path = cache.admit(done, sha256, length, content_id, codec)
"""

from node.content.cache import CACHE_FULL, ContentCache, SweepReport, plan_eviction
from node.content.download import (
    HASH_MISMATCH,
    LENGTH_MISMATCH,
    TOO_LARGE,
    TOO_MANY_REDIRECTS,
    URL_REFUSED,
    DownloadCancelled,
    Downloader,
    DownloadLimits,
    hash_file,
)

__all__ = [
    "CACHE_FULL", "HASH_MISMATCH", "LENGTH_MISMATCH", "TOO_LARGE", "TOO_MANY_REDIRECTS", "URL_REFUSED",
    "ContentCache", "DownloadCancelled", "DownloadLimits", "Downloader", "SweepReport", "hash_file",
    "plan_eviction",
]
