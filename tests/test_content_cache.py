"""Content cache: quota, LRU eviction that spares pinned content, USB import, startup sweep."""

from __future__ import annotations

import hashlib
import itertools
import os
import sqlite3
import time

import pytest

from node.content.cache import CACHE_FULL, CachedFile, ContentCache, SweepReport, plan_eviction
from node.content.download import HASH_MISMATCH, LENGTH_MISMATCH
from node.errors import RemoteDataError

pytestmark = pytest.mark.timeout(60)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path):
    ticks = itertools.count(1000)
    c = ContentCache(tmp_path / "cache", 300, tmp_path / "node.db", clock=lambda: float(next(ticks)))
    yield c
    c.close()


def put(cache: ContentCache, data: bytes, content_id: str = "") -> str:
    """What the download worker does once Downloader.fetch returned a verified partial."""
    digest = sha(data)
    partial = cache.partial_path(digest)
    partial.write_bytes(data)
    cache.admit(partial, digest, len(data), content_id or f"bulletin-{digest[:6]}", "opus")
    return digest


def blob(tag: int, size: int = 100) -> bytes:
    return bytes([tag]) * size


def test_admitted_file_is_stored_by_hash_and_found_by_content_id(cache):
    digest = put(cache, blob(1), "bulletin-2026-11-26")
    path = cache.path_for(digest)
    assert path == cache.root / digest[:2] / f"{digest}.bin"
    assert path.read_bytes() == blob(1)
    assert cache.sha256_for("bulletin-2026-11-26") == digest
    assert not cache.partial_path(digest).exists()
    assert cache.usage() == 100


def test_lru_evicts_least_recently_used(cache):
    a, b, c = put(cache, blob(1)), put(cache, blob(2)), put(cache, blob(3))
    cache.path_for(a)  # played: now b is the least recently used
    d = put(cache, blob(4))
    assert [cache.has(x) for x in (a, b, c, d)] == [True, False, True, True]
    assert not (cache.root / b[:2] / f"{b}.bin").exists()
    assert cache.usage() == 300


def test_pinned_content_is_never_evicted(cache):
    a, b, c = put(cache, blob(1)), put(cache, blob(2)), put(cache, blob(3))
    cache.set_pinned({a, b})  # the oldest two are in tomorrow's 05:30 slot
    d = put(cache, blob(4))
    assert [cache.has(x) for x in (a, b, c, d)] == [True, True, False, True]


def test_cache_full_when_only_pinned_content_remains(cache):
    a, b, c = put(cache, blob(1)), put(cache, blob(2)), put(cache, blob(3))
    cache.set_pinned({a, b, c})
    data = blob(4)
    partial = cache.partial_path(sha(data))
    partial.write_bytes(data)
    with pytest.raises(RemoteDataError) as err:
        cache.admit(partial, sha(data), len(data), "late-bulletin", "opus")
    assert err.value.reason == CACHE_FULL
    assert all(cache.has(x) for x in (a, b, c))
    assert not cache.has(sha(data))
    assert partial.exists()  # kept: admitted later without another download once pins move on
    cache.set_pinned({a})
    cache.admit(partial, sha(data), len(data), "late-bulletin", "opus")
    assert cache.has(sha(data)) and cache.has(a) and not cache.has(b)


def test_cache_full_evicts_nothing_when_even_unpinned_space_is_not_enough(cache):
    a, b = put(cache, blob(1)), put(cache, blob(2))
    cache.set_pinned({a})
    data = blob(5, 250)  # needs both gone, but a is pinned: b must not be sacrificed for nothing
    partial = cache.partial_path(sha(data))
    partial.write_bytes(data)
    with pytest.raises(RemoteDataError) as err:
        cache.admit(partial, sha(data), len(data), "long", "opus")
    assert err.value.reason == CACHE_FULL
    assert cache.has(a) and cache.has(b)


def test_admit_with_wrong_length_is_refused(cache):
    data = blob(1)
    partial = cache.partial_path(sha(data))
    partial.write_bytes(data + b"x")
    with pytest.raises(RemoteDataError) as err:
        cache.admit(partial, sha(data), len(data), "x", "opus")
    assert err.value.reason == LENGTH_MISMATCH
    assert not partial.exists() and not cache.has(sha(data))


def test_same_audio_under_two_content_ids_is_stored_once(cache):
    a = put(cache, blob(1), "morning")
    put(cache, blob(1), "evening")
    assert cache.sha256_for("morning") == cache.sha256_for("evening") == a
    assert cache.usage() == 100


def test_evict_until_frees_space_but_never_pinned(cache):
    a, b, c = put(cache, blob(1)), put(cache, blob(2)), put(cache, blob(3))
    cache.set_pinned({c})
    assert cache.evict_until(150) == [a, b]
    with pytest.raises(RemoteDataError) as err:
        cache.evict_until(250)
    assert err.value.reason == CACHE_FULL
    assert cache.has(c)


def test_usb_import_with_wrong_hash_is_refused(cache, tmp_path):
    stick = tmp_path / "usb" / "bulletin.opus"
    stick.parent.mkdir()
    stick.write_bytes(blob(9))
    with pytest.raises(RemoteDataError) as err:
        cache.import_file(stick, sha(blob(8)), 100, "bulletin", "opus")
    assert err.value.reason == HASH_MISMATCH
    assert cache.usage() == 0
    assert list((cache.root / "partial").iterdir()) == []


def test_usb_import_of_oversized_file_is_refused(cache, tmp_path):
    stick = tmp_path / "big.opus"
    stick.write_bytes(blob(9) + b"extra")
    with pytest.raises(RemoteDataError) as err:
        cache.import_file(stick, sha(blob(9)), 100, "bulletin", "opus")
    assert err.value.reason == LENGTH_MISMATCH
    assert cache.usage() == 0


def test_usb_import_with_matching_hash_is_admitted(cache, tmp_path):
    stick = tmp_path / "ok.opus"
    stick.write_bytes(blob(9))
    path = cache.import_file(stick, sha(blob(9)), 100, "bulletin", "opus")
    assert path.read_bytes() == blob(9) and stick.exists()
    assert cache.sha256_for("bulletin") == sha(blob(9))


def test_sweep_removes_orphans(cache):
    kept = put(cache, blob(1))
    vanished = put(cache, blob(2))
    cache.file_path(vanished).unlink()  # e.g. SD-card fsck removed it
    stray = cache.file_path(sha(b"never indexed"))
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"never indexed")
    resized = put(cache, blob(3))
    cache.file_path(resized).write_bytes(b"short")
    old_partial = cache.partial_path(sha(b"old"))
    old_partial.write_bytes(b"old")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_partial, (two_days_ago, two_days_ago))
    fresh_partial = cache.partial_path(sha(b"fresh"))
    fresh_partial.write_bytes(b"fresh")

    report = cache.sweep(now=time.time())

    assert (report.partials_removed, report.orphan_files_removed, report.index_rows_removed) == (1, 2, 2)
    assert not old_partial.exists() and fresh_partial.exists()
    assert not stray.exists()
    assert cache.has(kept) and not cache.has(vanished) and not cache.has(resized)
    assert cache.usage() == 100


def test_path_for_drops_row_whose_file_vanished(cache):
    digest = put(cache, blob(1))
    cache.file_path(digest).unlink()
    assert cache.path_for(digest) is None
    assert cache.usage() == 0


def test_verify_removes_damaged_file(cache):
    good, bad = put(cache, blob(1)), put(cache, blob(2))
    damaged = bytearray(blob(2))
    damaged[50] ^= 0xFF
    cache.file_path(bad).write_bytes(bytes(damaged))
    assert cache.verify(good) is True
    assert cache.verify(bad) is False
    assert not cache.has(bad)


def test_shared_connection_leaves_other_stores_alone(tmp_path):
    db = sqlite3.connect(tmp_path / "node.db")
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("INSERT INTO outbox (body) VALUES ('play record')")
    db.commit()
    cache = ContentCache(tmp_path / "cache", 1000, db)
    put(cache, blob(1))
    cache.close()  # does not close a connection it was given
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"outbox", "cache_files", "cache_names"}
    assert db.execute("SELECT body FROM outbox").fetchall() == [("play record",)]


def test_index_survives_restart(tmp_path):
    first = ContentCache(tmp_path / "cache", 1000, tmp_path / "node.db")
    digest = put(first, blob(1), "bulletin")
    first.close()
    second = ContentCache(tmp_path / "cache", 1000, tmp_path / "node.db")
    assert second.path_for(digest).read_bytes() == blob(1)
    assert second.sweep() == SweepReport(0, 0, 0)
    second.close()


def test_malformed_hash_cannot_escape_the_cache_directory(cache):
    with pytest.raises(ValueError):
        cache.path_for("../../etc/passwd")


def test_plan_eviction_prefers_oldest_and_skips_pinned():
    files = [CachedFile("a" * 64, 100, 3.0), CachedFile("b" * 64, 100, 1.0), CachedFile("c" * 64, 100, 2.0)]
    assert plan_eviction(files, set(), 300, 0) == []
    assert plan_eviction(files, set(), 300, 150) == ["b" * 64, "c" * 64]
    assert plan_eviction(files, {"b" * 64}, 300, 100) == ["c" * 64]
    assert plan_eviction(files, {"a" * 64, "b" * 64}, 300, 250) is None
