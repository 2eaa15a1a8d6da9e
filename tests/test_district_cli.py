"""`speaker-district send` exactly as a district integrator runs it, against the real broker and a
running node: the node plays what the CLI signed and ignores nothing it shouldn't."""

from __future__ import annotations

import subprocess
import wave

from support import NodeProcess, district_probe, write_node_config

from provisioning.district.content_server import ContentServer

NODE = "27788-01"


def test_send_play_with_the_cli_makes_the_node_play_and_prints_the_command_id(district_ws, broker, tmp_path,
                                                                              python_exe):
    audio = tmp_path / "thong-bao.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x10" * 8000)
    content = ContentServer(district_ws, tmp_path / "content").start()
    watcher = district_probe(broker, district_ws, client_id="cli-watch")
    node = NodeProcess(write_node_config(tmp_path / "n.toml", district_ws, NODE, [broker.address]), python_exe)
    try:
        watcher.wait_for(lambda t, o: t.endswith(f"{NODE}/status") and o.get("online") is True, 20)
        url = content.publish(audio)
        res = subprocess.run([python_exe, "-m", "provisioning.district.cli", "send", str(district_ws),
                              "--broker", broker.address, "play", "--to", "c27788", "--audio", str(audio),
                              "--url", url, "--level", "priority", "--valid-for", "10m"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        command_id = res.stdout.strip()
        assert len(command_id) >= 16 and "\n" not in command_id
        _, accepted = watcher.find(lambda t, o: t.endswith(f"{NODE}/events") and o.get("type") == "accepted", 20)
        assert accepted["data"]["command_id"] == command_id
        _, record = watcher.find(lambda t, o: t.endswith(f"{NODE}/events") and o.get("kind") == "play", 30)
        assert record["command_id"] == command_id and record["result"] == "completed"
        assert record["level"] == "priority"
    finally:
        node.terminate()
        node.close()
        watcher.close()
        content.stop()


def test_district_refuses_to_sign_a_command_a_node_would_drop_unread_as_too_large():
    # A node keeps only the size of a message over its 64 KiB limit, so its rejection could not name the
    # bytes (envelope_sha256 null, protocol section 6): the district tools never send one.
    import datetime as dt

    import pytest
    from trust_fixtures import V

    from node.errors import RemoteDataError
    from provisioning.district import signing

    slot = {"weekdays": [1], "start": "05:30", "duration": 60, "level": "normal", "volume": None,
            "playlist": [V.content(content_id=f"clip-{n:03d}", url="https://district.example/" + "a" * 600)
                         for n in range(100)]}
    body = {"version": 9, "timezone": "Asia/Ho_Chi_Minh", "slots": [{**slot, "id": "s1"}, {**slot, "id": "s2"}]}
    command = signing.build_command("schedule", body, targets=["27787-03"], valid_for=dt.timedelta(days=1))
    with pytest.raises(RemoteDataError) as refused:
        signing.sign_command(command, [V.key("schedule")])
    assert refused.value.reason == "too_large"
    small = {**body, "slots": [{**slot, "id": "s1", "playlist": slot["playlist"][:10]}]}
    command = signing.build_command("schedule", small, targets=["27787-03"], valid_for=dt.timedelta(days=1))
    assert len(signing.sign_command(command, [V.key("schedule")])) < 65536
