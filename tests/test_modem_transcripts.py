"""Vendor-manual transcripts replayed through the pty simulator and the real driver + status reader."""

from pathlib import Path

import pytest

from node.modem.at import ATPort
from node.modem.simulator import ModemSimulator, Transcript
from node.modem.status import STATUS_KEYS, read_status

pytestmark = pytest.mark.timeout(60)
TRANSCRIPTS = sorted((Path(__file__).parent / "modem_transcripts").glob("*.txt"))


def test_there_are_transcripts_for_both_families():
    names = [p.name for p in TRANSCRIPTS]
    assert any(n.startswith("ec25") for n in names) and any(n.startswith("sim7600") for n in names)


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("echo", [True, False], ids=["echo", "no-echo"])
def test_transcript_replays_to_expected_status(path, echo, tmp_path):
    transcript = Transcript.load(path)
    assert set(transcript.expect) <= set(STATUS_KEYS) and len(transcript.expect) >= 10
    profile = "sim7600" if path.name.startswith("sim7600") else "ec25"
    with (
        ModemSimulator(
            profile, echo=echo, transcript=transcript, strict=True, link=tmp_path / "ttyModemAT"
        ) as sim,
        ATPort(sim.port, timeout=1.0) as port,
    ):
        status = read_status(port).to_json()
        asked = [c.upper() for _, c in sim.commands]
    for key, value in transcript.expect.items():
        assert status[key] == value, f"{path.name}: {key}"
    assert not [c for c in transcript.order if c.upper() not in asked], "a transcript step was never asked"


def test_transcript_replay_survives_a_urc_inside_a_reply(tmp_path):
    transcript = Transcript.load(Path(__file__).parent / "modem_transcripts" / "ec25_viettel_lte.txt")
    with (
        ModemSimulator("ec25", transcript=transcript, strict=True, link=tmp_path / "ttyModemAT") as sim,
        ATPort(sim.port, timeout=1.0) as port,
    ):
        port.open()
        sim.inject_urc("+CEREG: 2", mid_reply=True)
        assert port.command("AT+CEREG?") == ["+CEREG: 0,1"]
        assert [u.line for u in port.take_urcs()] == ["+CEREG: 2"]
