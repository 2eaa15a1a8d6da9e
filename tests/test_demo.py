"""The README's first command: the district-in-a-box demo runs its whole scenario, exits 0 and leaves
nothing running."""

import os
import subprocess


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def test_demo_once_succeeds_and_leaves_nothing_running(tmp_path, python_exe):
    before = set(_children_of(os.getpid()))
    res = subprocess.run([python_exe, "-m", "provisioning.district", "demo", "--once", "--dir", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    out = res.stdout
    assert "FAIL" not in out and "demo succeeded" in out
    for step in ("connected over mutual TLS", "verified and played the signed bulletin",
                 "forged command rejected with reason code unknown_key", "replayed command rejected",
                 "emergency preempted the programme", "programme resumed", "door-open alarm raised",
                 "door-open alarm cleared"):
        assert step in out, step
    assert list((tmp_path / "demo" / "nodes" / "27787-01" / "state" / "wav").glob("*.wav"))
    report = out.split("Proof of play, ", 1)[1]  # the month's report from the collector's database
    works, not_heard = report.split("Not heard")
    assert "bulletin-tiem-chung" in works and "bao-so-3" in works
    assert "27787-01" in not_heard and "27787-02" in not_heard
    assert set(_children_of(os.getpid())) == before
    for proc in os.listdir("/proc"):      # no mosquitto or node process from the demo directory
        if proc.isdigit():
            try:
                cmdline = open(f"/proc/{proc}/cmdline", "rb").read()
            except OSError:
                continue
            assert str(tmp_path / "demo").encode() not in cmdline
