"""Benchmark the content path: streaming hash+verify, and a verified download over loopback mutual TLS.

    .venv/bin/python benchmarks/bench_hash.py            # 100 MB, 5 runs each
    .venv/bin/python benchmarks/bench_hash.py --mb 20 --runs 3

1. node.content.download.hash_file (what the cache and manifests use) against hashlib.file_digest over
   the same file in the same run; ratio = hashlib time / hash_file time (goal >= 0.9), plus the growth of
   ru_maxrss while hashing (memory must not grow with the file).
2. Downloader.fetch of the same file from tests/https_server.py over 127.0.0.1 (TLS, client
   certificate, hashing while streaming, fsync at the end) against a raw read of the file.
Both sides read the file from the page cache (a warm-up pass runs first), so this measures CPU cost,
not the SD card. Prints a markdown snippet for BENCHMARKS.md on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.content.download import Downloader, DownloadLimits, hash_file  # noqa: E402
from tests.https_server import TestHTTPSServer  # noqa: E402

MB = 1024 * 1024


def make_file(path: Path, size_mb: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size_mb):
            piece = os.urandom(MB)
            digest.update(piece)
            f.write(piece)
    return digest.hexdigest()


def timed(fn, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def plain_hashlib(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def raw_read(path: Path, chunk: int = MB) -> int:
    total = 0
    with open(path, "rb", buffering=0) as f:
        while data := f.read(chunk):
            total += len(data)
    return total


def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_hash.py", description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="file size in MiB (default 100)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement; the median is shown")
    parser.add_argument("--no-download", action="store_true", help="skip the loopback HTTPS download")
    args = parser.parse_args(argv)
    if args.mb < 1 or args.runs < 1:
        parser.error("--mb and --runs must be at least 1")

    with tempfile.TemporaryDirectory(prefix="bench-hash-") as tmp:
        tmp = Path(tmp)
        source = tmp / "audio.bin"
        expected = make_file(source, args.mb)
        size = source.stat().st_size
        raw_read(source)  # warm the page cache for every contender alike

        rss_before = maxrss_kib()
        t_ours, (ours, length) = timed(lambda: hash_file(source), args.runs)
        rss_growth = maxrss_kib() - rss_before
        t_plain, plain = timed(lambda: plain_hashlib(source), args.runs)
        assert ours == plain == expected and length == size, "hash_file disagrees with hashlib"

        rows = [
            ("hash_file (node.content.download)", t_ours),
            ("hashlib.file_digest", t_plain),
        ]
        t_raw, _ = timed(lambda: raw_read(source), args.runs)
        rows.append(("raw read, no hash", t_raw))

        download_rss = None
        if not args.no_download:
            with TestHTTPSServer(tmp / "server") as server:
                url = server.add("/audio.bin", source)
                client = Downloader(ca_file=server.pki.ca_file, cert_file=server.pki.client_cert,
                                    key_file=server.pki.client_key,
                                    limits=DownloadLimits(max_bytes=size, total_timeout=3600))
                partial = tmp / "audio.partial"

                def download():
                    partial.unlink(missing_ok=True)
                    return client.fetch(url, partial, expected, size)

                rss_before = maxrss_kib()
                t_dl, _ = timed(download, args.runs)
                download_rss = maxrss_kib() - rss_before
            rows.append(("Downloader.fetch over loopback mTLS (hash + fsync)", t_dl))

    print(f"### Content hashing and download ({args.mb} MiB, median of {args.runs})\n")
    print(f"`.venv/bin/python benchmarks/bench_hash.py --mb {args.mb} --runs {args.runs}` on "
          f"{platform.machine()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs (page cache warm)\n")
    print("| path | median s | MiB/s |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {args.mb / seconds:.0f} |")
    print()
    ratio = t_plain / t_ours
    print(f"- hash_file throughput / hashlib throughput: **{ratio:.2f}** (goal >= 0.9: "
          f"{'met' if ratio >= 0.9 else 'NOT met'})")
    print(f"- ru_maxrss growth (new peak RSS) while hashing {args.mb} MiB: {rss_growth} KiB")
    if download_rss is not None:
        print(f"- ru_maxrss growth while downloading {args.mb} MiB (client and test server, one process): "
              f"{download_rss} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
