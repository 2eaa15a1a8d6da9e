"""`speaker-district records` and `report`: the proof of play a district hands in, from stored rows."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from zoneinfo import ZoneInfo

import pytest

from provisioning.district.cli import main as district_main
from provisioning.district.records_store import Incoming, RecordStore
from provisioning.district.reports import build_report, render

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
DAY1 = dt.datetime(2026, 11, 1, 6, 0, tzinfo=TZ).timestamp()
SHA = "ab" * 32


def play(node, n, content="ban-tin-sang", result="completed", seconds=120.0, day=0, title="Bản tin sáng"):
    ts = DAY1 + day * 86400 + n
    return {"v": 1, "id": f"01P{node.replace('-', '')}{n:06d}{day:02d}AAAA", "node": node, "ts": int(ts),
            "kind": "play", "content_id": content, "sha256": SHA, "level": "normal", "source": "schedule",
            "result": result, "seconds": seconds, "started_at": ts if seconds else None, "title": title}


def event(node, n, type_, day=0):
    return {"v": 1, "id": f"01E{node.replace('-', '')}{n:06d}{day:02d}AAAA", "node": node,
            "ts": int(DAY1 + day * 86400 + n), "kind": "event", "type": type_, "data": {}}


def fill(store):
    rows = []
    for day in range(30):  # 27787-01 reports every day of November
        rows.append(play("27787-01", 1, day=day))
    rows += [play("27787-02", 2, result="preempted", seconds=30.5), play("27787-02", 3, result="skipped", seconds=0),
             play("27787-02", 4, result="failed", seconds=0), event("27787-02", 5, "content_missing"),
             play("27788-01", 6, content="hop-dan", title="Họp dân", seconds=600.0)]
    store.store_batch([Incoming(r["kind"], r["node"], "b", time.time(), r, json.dumps(r, ensure_ascii=False))
                       for r in rows])


@pytest.fixture
def ws_with_records(tmp_path):
    store = RecordStore(str(tmp_path / "records.db"))
    fill(store)
    store.close()
    return tmp_path


def test_report_counts_plays_seconds_communes_and_interruptions_per_work(ws_with_records):
    store = RecordStore(str(ws_with_records / "records.db"))
    from provisioning.district.reports import month_report

    report = month_report(store, ws_with_records, "2026-11", now=DAY1 + 40 * 86400)
    works = {w["content_id"]: w for w in report.works}
    sang = works["ban-tin-sang"]
    assert (sang["plays"], sang["seconds"], sang["communes"], sang["nodes"], sang["completed"],
            sang["interrupted"]) == (31, 30 * 120.0 + 30.5, 1, 2, 30, 1)
    assert sang["title"] == "Bản tin sáng" and sang["sha256"] == SHA
    assert works["hop-dan"]["communes"] == 1 and works["hop-dan"]["seconds"] == 600.0
    not_heard = {r["node"]: r for r in report.not_heard}
    assert (not_heard["27787-02"]["skipped"], not_heard["27787-02"]["failed"], not_heard["27787-02"]["missing"]) \
        == (1, 1, 1)
    assert not_heard["27787-01"]["silent_days"] == []
    assert not_heard["27787-02"]["silent_days"] == list(range(2, 31))  # heard from on the 1st only
    store.close()


def test_a_node_that_never_reported_is_silent_every_day():
    report = build_report([], {}, ["27790-01"], month="2026-11", days=30)
    assert report.not_heard[0]["silent_days"] == list(range(1, 31))
    assert report.works == []


def test_running_month_does_not_count_future_days_as_silent():
    report = build_report([], {"27790-01": {0, 1}}, ["27790-01"], month="2026-11", days=30, elapsed_days=3)
    assert report.not_heard[0]["silent_days"] == [3]


def test_report_by_commune_and_node_splits_rows(ws_with_records, capsys):
    assert district_main(["report", str(ws_with_records), "--month", "2026-11", "--by", "commune", "--csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[1][:2] == ["commune", "content id"]
    assert {(r[0], r[1]) for r in rows[2:4]} == {("27787", "ban-tin-sang"), ("27788", "hop-dan")}
    assert district_main(["report", str(ws_with_records), "--month", "2026-11", "--by", "node"]) == 0
    out = capsys.readouterr().out
    assert "27787-02" in out.split("Not heard")[0]


def test_report_in_vietnamese_has_vietnamese_headings(ws_with_records, capsys):
    assert district_main(["report", str(ws_with_records), "--month", "2026-11", "--lang", "vi", "--csv"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["Xác nhận phát thanh, tháng 2026-11 (theo nội dung)"]
    assert rows[1] == ["mã nội dung", "tiêu đề", "sha256", "số lần phát", "thời lượng phát (giây)", "số xã",
                       "số cụm loa", "phát trọn vẹn", "bị ngắt"]
    assert "Không được phát, tháng 2026-11" in out and "ngày im lặng" in out


def test_records_filters_by_node_and_time_and_prints_json_and_csv(ws_with_records, capsys):
    assert district_main(["records", str(ws_with_records), "--node", "27787-01", "--since", "2026-11-03",
                          "--until", "2026-11-05", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all(r["node"] == "27787-01" for r in lines)
    assert lines[0]["payload"]["content_id"] == "ban-tin-sang"
    assert district_main(["records", str(ws_with_records), "--kind", "event", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["type"] for r in rows] == ["content_missing"]


def test_bad_month_is_a_usage_error(ws_with_records, capsys):
    with pytest.raises(SystemExit) as exit_:
        district_main(["report", str(ws_with_records), "--month", "11-2026"])
    assert exit_.value.code == 2
    assert "YYYY-MM" in capsys.readouterr().err


def test_render_of_an_empty_report_says_nothing_was_found():
    text = render(build_report([], {}, [], month="2026-11", days=30), lang="vi")
    assert "(không có)" in text


def test_a_node_is_not_silent_before_its_first_message():
    report = build_report([], {"27790-01": {10}}, ["27790-01"], month="2026-11", days=30, first_day={"27790-01": 10})
    assert report.not_heard[0]["silent_days"] == list(range(12, 31))
