"""`speaker-node modem status` as a technician runs it, against the pty simulator, in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.modem.simulator import ModemSimulator
from node.modem.status import STATUS_KEYS

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]


def speaker_node(*args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "node", "modem", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("profile", ["ec25", "sim7600"])
def test_status_json_prints_the_keys_with_the_modems_values(profile, tmp_path):
    with ModemSimulator(profile, link=tmp_path / "ttyModemAT") as sim:
        result = speaker_node("status", "--port", sim.port, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == list(STATUS_KEYS) and len(data) == 13
    assert data["operator"] == "Viettel" and data["mcc_mnc"] == "45204"
    assert data["sim"] == "ready" and data["registration"] == "home" and data["access_technology"] == "lte"
    assert data["imei"] == "867698041234561" and data["iccid"] == "8984048000012345678"
    assert data["network_time"].endswith("+07:00")


def test_status_table_is_human_readable(tmp_path):
    with ModemSimulator("ec25", link=tmp_path / "ttyModemAT") as sim:
        sim.set_sim("absent")
        result = speaker_node("status", "--port", sim.port)
    assert result.returncode == 0, result.stderr
    assert "SIM                absent" in result.stdout and "Traceback" not in result.stderr


def test_no_modem_on_the_path_exits_1_with_a_clear_message(tmp_path):
    result = speaker_node("status", "--port", str(tmp_path / "ttyUSB9"), "--json")
    assert result.returncode == 1 and result.stdout == ""
    assert f"no modem answered on {tmp_path / 'ttyUSB9'}" in result.stderr
    assert "ModemManager" in result.stderr and "Traceback" not in result.stderr


def test_a_port_where_nothing_answers_exits_1(tmp_path):
    with ModemSimulator("ec25", link=tmp_path / "ttyModemAT") as sim:
        sim.hang(30)
        result = speaker_node("status", "--port", sim.port, "--timeout", "0.3")
    assert (
        result.returncode == 1 and "no modem answered" in result.stderr and "Traceback" not in result.stderr
    )


def test_simulate_runs_until_terminated(tmp_path):
    link = tmp_path / "ttyModemAT"
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "modem", "simulate", "--link", str(link)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "simulated EC25" in proc.stdout.readline()
        result = speaker_node("status", "--port", str(link), "--json")
        assert json.loads(result.stdout)["operator"] == "Viettel"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err
    assert not link.exists()
