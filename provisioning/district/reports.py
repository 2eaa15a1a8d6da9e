"""`speaker-district records` and `speaker-district report`: what the district's store holds, and the
monthly proof of play a district hands in for royalties (Decision 31/2021/QĐ-UBND).

    speaker-district records DIR [--node ID] [--since T] [--until T] [--kind play|event] [--json|--csv]
    speaker-district report DIR --month YYYY-MM [--by content|commune|node] [--csv] [--lang vi]

Both read the collector's database: DIR/records.db, or `--db postgresql://...`. The report's logic
(`build_report`) is a pure function over stored rows; main_* are the edges.

A play counts as *heard* when it sounded (`seconds` > 0); it is *completed* when it played to its
end, *interrupted* when it sounded but was preempted, stopped or failed part-way. What was **not**
heard: per node, items skipped (never started), failed without sounding, and `content_missing`
events (a schedule slot or command whose audio was not on the node); and the days of the month on
which a node sent nothing at all (no record, no status) - silent.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from provisioning.district.records_store import RecordStore, StoreError, as_json

DEFAULT_TZ = "Asia/Ho_Chi_Minh"
INTERRUPTED = ("preempted", "stopped", "failed")

HEADINGS = {
    "en": {
        "content_id": "content id", "title": "title", "sha256": "sha256", "plays": "plays",
        "seconds": "seconds aired", "communes": "communes", "nodes": "nodes", "completed": "completed",
        "interrupted": "interrupted", "commune": "commune", "node": "node", "skipped": "skipped",
        "failed": "failed", "missing": "content missing", "silent_days": "silent days",
        "works": "Proof of play, {month} (by {by})", "not_heard": "Not heard, {month}",
        "none": "(nothing)",
    },
    "vi": {
        "content_id": "mã nội dung", "title": "tiêu đề", "sha256": "sha256", "plays": "số lần phát",
        "seconds": "thời lượng phát (giây)", "communes": "số xã", "nodes": "số cụm loa",
        "completed": "phát trọn vẹn", "interrupted": "bị ngắt", "commune": "xã", "node": "cụm loa",
        "skipped": "bỏ qua", "failed": "lỗi", "missing": "thiếu nội dung", "silent_days": "ngày im lặng",
        "works": "Xác nhận phát thanh, tháng {month} (theo {by})", "not_heard": "Không được phát, tháng {month}",
        "none": "(không có)",
    },
}
BY_VI = {"content": "nội dung", "commune": "xã", "node": "cụm loa"}


def commune_of(node_id: str) -> str:
    return node_id.split("-", 1)[0]


def parse_time(text: str, tz: ZoneInfo) -> float:
    """RFC 3339, or a date YYYY-MM-DD (midnight in the district's time zone)."""
    try:
        if len(text) == 10:
            return dt.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (value if value.tzinfo else value.replace(tzinfo=tz)).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD) or RFC 3339 time") from None


def month_bounds(month: str, tz: ZoneInfo) -> tuple[float, float, int]:
    try:
        start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=tz)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--month {month!r}: expected YYYY-MM") from None
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp(), (end - start).days


# --- the report (pure) --------------------------------------------------------------------------

@dataclass
class Report:
    month: str
    by: str
    works: list[dict] = field(default_factory=list)
    not_heard: list[dict] = field(default_factory=list)


def build_report(records: list[dict], active_days: dict[str, set[int]], nodes: list[str], *, month: str,
                 days: int, by: str = "content", elapsed_days: int | None = None,
                 first_day: dict[str, int] | None = None) -> Report:
    """records: stored rows of the month; active_days: {node: {day index}} with any message;
    nodes: every node the district knows; elapsed_days: days of the month already past (a report for
    the running month does not call today's silence a silent day); first_day: {node: day index of the
    first message it ever sent} (negative: before this month) - a node is not silent before it existed.
    A node the registry knows that never sent anything is silent every day."""
    groups: dict[tuple, dict] = {}
    heard_by = {"content": lambda r: (), "commune": lambda r: (commune_of(r["node"]),), "node": lambda r: (r["node"],)}
    not_heard = {n: {"node": n, "commune": commune_of(n), "skipped": 0, "failed": 0, "missing": 0}
                 for n in nodes}
    for r in records:
        node_row = not_heard.setdefault(r["node"], {"node": r["node"], "commune": commune_of(r["node"]),
                                                    "skipped": 0, "failed": 0, "missing": 0})
        if r["kind"] == "event":
            if r["type"] == "content_missing":
                node_row["missing"] += 1
            continue
        seconds = r["seconds"] or 0.0
        if r["result"] == "skipped":
            node_row["skipped"] += 1
            continue
        if seconds <= 0:
            node_row["failed"] += 1
            continue
        key = (*heard_by[by](r), r["content_id"], r["sha256"])
        g = groups.setdefault(key, {"content_id": r["content_id"], "title": None, "sha256": r["sha256"],
                                    "plays": 0, "seconds": 0.0, "_communes": set(), "_nodes": set(),
                                    "completed": 0, "interrupted": 0,
                                    **({"commune": commune_of(r["node"])} if by == "commune" else {}),
                                    **({"node": r["node"]} if by == "node" else {})})
        g["title"] = g["title"] or r["title"]
        g["plays"] += 1
        g["seconds"] += seconds
        g["_communes"].add(commune_of(r["node"]))
        g["_nodes"].add(r["node"])
        if r["result"] == "completed":
            g["completed"] += 1
        elif r["result"] in INTERRUPTED:
            g["interrupted"] += 1
    works = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        g = groups[key]
        g["communes"], g["nodes"] = len(g.pop("_communes")), len(g.pop("_nodes"))
        g["seconds"] = round(g["seconds"], 1)
        works.append(g)
    limit = days if elapsed_days is None else max(0, min(days, elapsed_days))
    rows = []
    for node in sorted(not_heard):
        row = not_heard[node]
        since = max(0, (first_day or {}).get(node, 0))
        silent = [d + 1 for d in range(since, limit) if d not in active_days.get(node, set())]
        row["silent_days"] = silent
        rows.append(row)
    return Report(month, by, works, rows)


WORK_COLUMNS = {"content": ["content_id", "title", "sha256", "plays", "seconds", "communes", "nodes", "completed",
                            "interrupted"]}
WORK_COLUMNS["commune"] = ["commune"] + WORK_COLUMNS["content"]
WORK_COLUMNS["node"] = ["node"] + WORK_COLUMNS["content"]
NOT_HEARD_COLUMNS = ["node", "commune", "skipped", "failed", "missing", "silent_days"]


def _cell(value) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def render(report: Report, *, lang: str = "en", as_csv: bool = False) -> str:
    h = HEADINGS[lang]
    by = BY_VI.get(report.by, report.by) if lang == "vi" else report.by
    sections = [(h["works"].format(month=report.month, by=by), WORK_COLUMNS[report.by], report.works),
                (h["not_heard"].format(month=report.month), NOT_HEARD_COLUMNS, report.not_heard)]
    out = io.StringIO()
    for index, (title, columns, rows) in enumerate(sections):
        if index:
            out.write("\n")
        if as_csv:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow([title])
            writer.writerow([h[c] for c in columns])
            for row in rows:
                writer.writerow([_cell(row[c]) for c in columns])
            continue
        out.write(title + "\n")
        table = [[h[c] for c in columns]] + [[_cell(row[c]) for c in columns] for row in rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
        for i, line in enumerate(table):
            out.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() + "\n")
            if i == 0:
                out.write("  ".join("-" * w for w in widths) + "\n")
        if not rows:
            out.write(h["none"] + "\n")
    return out.getvalue()


def registry_nodes(workspace: Path) -> list[str]:
    path = Path(workspace) / "nodes" / "registry.json"
    try:
        return sorted(json.loads(path.read_text()).get("nodes", {}))
    except (OSError, ValueError):
        return []


def month_report(store: RecordStore, workspace: Path, month: str, *, by: str = "content", tz: str = DEFAULT_TZ,
                 now: float | None = None) -> Report:
    zone = ZoneInfo(tz)
    start, end, days = month_bounds(month, zone)
    records = store.records(since=start, until=end)
    nodes = sorted(set(store.known_nodes()) | set(registry_nodes(workspace)))
    now = dt.datetime.now().timestamp() if now is None else now
    elapsed = None if now >= end else int((now - start) // 86400)
    first_day = {node: int((ts - start) // 86400) for node, ts in store.first_seen().items()}
    return build_report(records, store.status_days(start, end), nodes, month=month, days=days, by=by,
                        elapsed_days=elapsed, first_day=first_day)


def print_month_report(db: str, workspace, *, tz: str = DEFAULT_TZ) -> None:
    """This month's proof-of-play report from a records database (the demo ends with it)."""
    store = RecordStore.open(db, workspace)
    try:
        month = dt.datetime.now(ZoneInfo(tz)).strftime("%Y-%m")
        print(render(month_report(store, Path(workspace), month, tz=tz)))
    finally:
        store.close()


# --- command lines --------------------------------------------------------------------------------

def _open(args) -> RecordStore | None:
    try:
        return RecordStore.open(args.db, args.workspace)
    except StoreError as exc:
        print(f"speaker-district: {exc}", file=sys.stderr)
        return None


def main_records(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speaker-district records", description="the records the collector stored")
    p.add_argument("workspace")
    p.add_argument("--db", help="postgresql://... or a SQLite file (default DIR/records.db)")
    p.add_argument("--node")
    p.add_argument("--since", help="YYYY-MM-DD or RFC 3339")
    p.add_argument("--until", help="YYYY-MM-DD or RFC 3339 (exclusive)")
    p.add_argument("--kind", choices=["play", "event"])
    p.add_argument("--timezone", default=DEFAULT_TZ)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per line (with the node's payload)")
    fmt.add_argument("--csv", action="store_true")
    args = p.parse_args(argv)
    zone = ZoneInfo(args.timezone)
    try:
        since = parse_time(args.since, zone) if args.since else None
        until = parse_time(args.until, zone) if args.until else None
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    store = _open(args)
    if store is None:
        return 1
    try:
        rows = store.records(node=args.node, since=since, until=until, kind=args.kind)
    finally:
        store.close()
    columns = ["id", "node", "kind", "type", "ts", "content_id", "title", "sha256", "result", "seconds", "reason",
               "broker"]
    if args.json:
        for row in rows:
            print(json.dumps(as_json(row), ensure_ascii=False, sort_keys=True))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row[c]) for c in columns])
    else:
        for row in rows:
            when = dt.datetime.fromtimestamp(row["ts"], zone).strftime("%Y-%m-%d %H:%M:%S")
            what = (f"{row['content_id']} {row['result']} {row['seconds'] or 0:.1f}s" if row["kind"] == "play"
                    else row["type"] or "")
            print(f"{when}  {row['node']}  {row['kind']:<5}  {what}  {row['id']}")
        print(f"{len(rows)} record(s)", file=sys.stderr)
    return 0


def main_report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="speaker-district report", description="monthly proof-of-play report")
    p.add_argument("workspace")
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--by", choices=["content", "commune", "node"], default="content")
    p.add_argument("--csv", action="store_true")
    p.add_argument("--lang", choices=["en", "vi"], default="en", help="column headings (vi: Vietnamese)")
    p.add_argument("--db", help="postgresql://... or a SQLite file (default DIR/records.db)")
    p.add_argument("--timezone", default=DEFAULT_TZ)
    args = p.parse_args(argv)
    try:
        month_bounds(args.month, ZoneInfo(args.timezone))
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    store = _open(args)
    if store is None:
        return 1
    try:
        report = month_report(store, Path(args.workspace), args.month, by=args.by, tz=args.timezone)
    finally:
        store.close()
    sys.stdout.write(render(report, lang=args.lang, as_csv=args.csv))
    return 0


def main(argv: list[str]) -> int:  # the dispatcher calls main_records / main_report by name
    return main_records(argv)
