"""The AT driver against the pty simulator: echo, URCs, garbage, timeouts, errors, a vanishing port."""

import os
import threading
import time

import pytest
from support import wait_until

from node.errors import DeviceError
from node.modem.at import ATPort, ModemCommandError, ModemGone, ModemTimeout
from node.modem.simulator import ModemSimulator
from node.modem.status import read_status

pytestmark = pytest.mark.timeout(60)


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_leaks():
    threads, fds = set(threading.enumerate()), _open_fds()
    yield
    try:
        wait_until(lambda: not (set(threading.enumerate()) - threads), timeout=2)
    except TimeoutError:
        raise AssertionError("simulator or driver left a thread running") from None
    assert len(_open_fds() - fds) == 0, "file descriptors leaked"


@pytest.fixture
def sim(no_leaks, tmp_path):
    with ModemSimulator(
        "ec25", link=tmp_path / "ttyModemAT", reset_downtime=0.3, search_time=0.3
    ) as simulator:
        yield simulator


@pytest.fixture
def port(sim):
    with ATPort(sim.port, timeout=1.0, retry_delay=0.05) as at_port:
        yield at_port


def test_echoed_command_is_not_taken_as_reply(sim):
    with ATPort(sim.port, timeout=1.0) as port:
        port.command("ATE1")  # echo back on, as after a modem reset
        assert port.command("AT+CSQ") == ["+CSQ: 23,99"]
        assert port.command("ATI") == ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]


def test_driver_turns_echo_off_at_open(sim, port):
    port.open()
    assert sim.count("ATE0") == 1 and sim.echo is False
    assert sim.count("AT+CMEE=1") == 1


def test_unsolicited_creg_during_creg_query_is_not_the_reply(sim, port):
    port.open()
    sim.set_registration(5)
    sim.inject_urc("+CREG: 1", mid_reply=True)
    assert port.command("AT+CREG?") == ["+CREG: 0,5"]
    assert [u.line for u in port.take_urcs()] == ["+CREG: 1"]


def test_urc_between_reply_lines_and_ok_is_collected(sim, port):
    port.open()
    sim.inject_urc("+QIND: SMS DONE", mid_reply=True)
    sim.inject_urc("+CGEV: NW DETACH", mid_reply=True)
    assert port.command("AT+CSQ") == ["+CSQ: 23,99"]
    urcs = port.take_urcs()
    assert [u.line for u in urcs] == ["+QIND: SMS DONE", "+CGEV: NW DETACH"]
    assert all(u.at > 0 for u in urcs)


def test_urc_arriving_between_commands_is_kept(sim, port):
    port.open()
    sim.inject_urc("^SYSSTART")  # returns once the simulator has written it to the pty
    assert port.command("AT+CSQ") == ["+CSQ: 23,99"]
    assert "^SYSSTART" in [u.line for u in port.take_urcs()]


def test_garbage_bytes_and_nuls_do_not_break_the_reply(sim, port):
    port.command("ATE1")
    sim.inject_garbage(b"\x00\xff\xfe\r\n\x00\x00\r\n\xc3\x28\x00", mid_reply=True)
    sim.inject_garbage(b"\xff\x00\r\n\x00\xfe")  # glued to the echo that follows (written when this returns)
    assert port.command("AT+CGSN") == ["867698041234561"]
    sim.inject_garbage(b"\xff\xfe\x00", mid_reply=True)  # glued to the final OK
    assert port.command("AT+CSQ") == ["+CSQ: 23,99"]


def test_silent_modem_raises_timeout_then_recovers(sim, port):
    port.open()
    sim.hang(0.8)
    silent_until = time.monotonic() + 0.8  # hang() returns once the simulator has set its own deadline
    with pytest.raises(ModemTimeout):
        port.command("AT+CSQ", timeout=0.3)
    time.sleep(max(0.0, silent_until - time.monotonic()))  # the scenario: the modem's silence runs out
    assert port.command("AT+CSQ") == ["+CSQ: 23,99"]


def test_late_reply_after_timeout_is_not_taken_for_the_next_command(sim, port):
    port.open()
    sim.delay_next_reply(0.6)
    with pytest.raises(ModemTimeout):
        port.command("AT+CSQ", timeout=0.3)
    assert port.command("AT+CGSN") == ["867698041234561"]
    assert port.stale_lines_dropped >= 1


def test_cme_error_is_typed_with_its_code(sim, port):
    sim.cme_error_for("AT+CSQ", 30)
    with pytest.raises(ModemCommandError) as info:
        port.command("AT+CSQ")
    assert info.value.cme_code == 30 and isinstance(info.value, DeviceError)
    sim.cme_error_for("AT+CESQ", None)
    with pytest.raises(ModemCommandError) as info:
        port.command("AT+CESQ")
    assert info.value.cme_code is None and info.value.text == "ERROR"


def test_verbose_cme_text_is_mapped_to_its_code(sim, port):
    port.command("AT+CMEE=2")
    sim.set_sim("absent")
    with pytest.raises(ModemCommandError) as info:
        port.command("AT+CPIN?")
    assert info.value.cme_code == 10


def test_missing_sim_reads_absent_and_other_fields_still_read(sim, port):
    sim.set_sim("absent")
    status = read_status(port)
    assert status.sim == "absent"
    assert status.imei == "867698041234561"
    assert status.rssi_dbm == -67
    assert status.iccid is None and status.operator is None and status.registration == "not_registered"


def test_csq_99_and_searching_modem_report_unknown_signal(sim, port):
    sim.set_signal(99)
    sim.set_registration(2)
    status = read_status(port)
    assert status.registration == "searching"
    assert (status.rssi_dbm, status.rsrp_dbm, status.rsrq_db, status.sinr_db) == (None, None, None, None)


def test_one_query_error_leaves_only_that_field_null(sim, port):
    sim.cme_error_for("AT+QCCID", 13)
    sim.cme_error_for("AT+CCID", None)
    status = read_status(port)
    assert status.iccid is None
    assert status.imei == "867698041234561" and status.operator == "Viettel" and status.mcc_mnc == "45204"
    assert status.details["errors"]["AT+QCCID"] == 13


def test_port_vanishing_raises_gone_then_reopens_when_it_comes_back(sim, port):
    assert port.command("AT+CSQ") == ["+CSQ: 23,99"]
    sim.vanish()
    with pytest.raises(ModemGone):
        port.command("AT+CSQ")
    with pytest.raises(ModemGone):
        port.command("AT+CSQ")  # the symlink is gone: bounded retries, then a clear error
    sim.reappear()
    assert port.command("AT+CSQ") == ["+CSQ: 23,99"]
    assert port.opens == 2
    assert sim.count("ATE0") == 2  # the handshake runs again on the new port


def test_cfun_reset_reenumerates_and_registration_returns(no_leaks, tmp_path):
    with (
        ModemSimulator("ec25", link=tmp_path / "ttyModemAT", reset_downtime=0.3, search_time=1.0) as sim,
        ATPort(sim.port, timeout=1.0, retry_delay=0.1) as port,
    ):
        _reset_and_wait(sim, port)


def _reset_and_wait(sim, port):
    assert port.command("AT+CFUN=1,1") == []
    seen_gone, seen_searching = False, False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            status = read_status(port)
        except (ModemGone, ModemTimeout):
            seen_gone = True
            time.sleep(0.05)
            continue
        seen_searching |= status.registration == "searching"
        if status.registration == "home" and seen_gone:
            break
        time.sleep(0.05)
    assert sim.resets == 1 and seen_gone and seen_searching
    assert status.registration == "home" and port.opens == 2
    assert sim.echo is False  # the driver re-sent ATE0 after the modem came back with echo on


def test_command_injection_is_refused_before_writing(sim, port):
    port.open()
    before = len(sim.commands)
    with pytest.raises(ValueError):
        port.command("AT+CSQ\rAT+CFUN=1,1")
    assert len(sim.commands) == before and sim.resets == 0


def test_no_modem_on_missing_path_is_gone(tmp_path):
    port = ATPort(str(tmp_path / "nothing"), open_attempts=2, retry_delay=0.01)
    with pytest.raises(ModemGone):
        port.command("AT")


def test_port_vanishing_mid_flush_with_termios_eio_is_modem_gone_not_a_crash(sim):
    # pyserial's flush() is termios.tcdrain and open() runs tcgetattr: on a device that just vanished
    # (USB re-enumeration after AT+CFUN=1,1) they raise termios.error, which is not an OSError. Under load
    # the reset test hit exactly that and the exception escaped the driver.
    import termios

    import serial

    class VanishingPort(serial.Serial):
        vanish = False

        def flush(self):
            if VanishingPort.vanish:
                raise termios.error(5, "Input/output error")
            super().flush()

    opened = []

    def factory(*args, **kwargs):
        if VanishingPort.vanish and opened:
            raise termios.error(5, "Input/output error")    # tcgetattr on the half-gone device
        opened.append(1)
        return VanishingPort(*args, **kwargs)

    with ATPort(sim.port, timeout=1.0, retry_delay=0.01, open_attempts=2, serial_factory=factory) as port:
        assert port.command("AT+CSQ") == ["+CSQ: 23,99"]
        VanishingPort.vanish = True
        with pytest.raises(ModemGone):
            port.command("AT+CSQ")                           # write, then flush: EIO
        with pytest.raises(ModemGone):
            port.command("AT+CSQ")                           # reopen: EIO from open, both attempts
        VanishingPort.vanish = False
        assert port.command("AT+CSQ") == ["+CSQ: 23,99"]     # and it comes back when the device does
