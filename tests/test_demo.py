"""The README's first command: the district-in-a-box demo runs its whole scenario, exits 0 and leaves
nothing running."""

import os
import signal
import subprocess

from support import wait_until


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
                         capture_output=True, text=True, timeout=120)   # a failing demo ends within 90 s
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    out = res.stdout
    assert "FAIL" not in out and "demo succeeded" in out
    for step in ("connected over mutual TLS", "trusts its clock: signed time from the district (source signed)",
                 "verified and played the signed bulletin",
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
    assert _processes_using(tmp_path / "demo") == []     # no mosquitto or node process from the demo directory


def _processes_using(directory) -> list[int]:
    found = []
    for proc in os.listdir("/proc"):
        if proc.isdigit() and int(proc) != os.getpid():
            try:
                cmdline = open(f"/proc/{proc}/cmdline", "rb").read()
            except OSError:
                continue
            if str(directory).encode() in cmdline:
                found.append(int(proc))
    return found


def test_demo_killed_with_sigkill_leaves_no_broker_or_node_behind(tmp_path, python_exe):
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen([python_exe, "-m", "provisioning.district", "demo", "--dir", str(demo_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:            # wait until the broker and both nodes are up and trusted
            if "trusts its clock" in line and "27787-02" in line:
                break
        else:
            raise AssertionError("the demo never got its nodes running")
        assert len(_processes_using(demo_dir)) >= 3     # mosquitto + two nodes
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # the kernel delivers the parent-death signal at once; only the reaping takes a moment
        wait_until(lambda: _processes_using(demo_dir) == [], 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _processes_using(demo_dir):
            os.kill(pid, signal.SIGKILL)
