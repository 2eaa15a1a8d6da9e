import json
import xml.etree.ElementTree as ET

import pytest

from provisioning.label import main, make_qr, qr_payload

FP = ":".join(["AB"] * 32)


@pytest.fixture
def node_dir(tmp_path):
    node = tmp_path / "27787-03"
    node.mkdir()
    (node / "identity.json").write_text(
        json.dumps(
            {
                "node_id": "27787-03",
                "fingerprint": FP,
                "commune": "27787",
                "district": "760",
                "province": "75",
            }
        )
    )
    return node


def test_label_svg_has_node_id_commune_fingerprint_and_qr(node_dir, tmp_path):
    out = tmp_path / "label.svg"
    assert main([str(node_dir), "-o", str(out), "--png"]) == 0
    svg = out.read_text()
    root = ET.fromstring(svg.encode())  # well-formed XML
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "27787-03" in texts and "27787" in texts
    assert FP.replace(":", "") in texts.replace(":", "").replace(" ", "")
    nested = [e for e in root.iter("{http://www.w3.org/2000/svg}svg") if e is not root]
    assert nested and any(p.get("d") for p in nested[0].iter("{http://www.w3.org/2000/svg}path"))
    assert (tmp_path / "label.qr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_qr_code_encodes_the_node_id_and_fingerprint_text():
    qr = make_qr("27787-03", FP)
    assert qr_payload("27787-03", FP) == f"SPEAKER-NODE;id=27787-03;sha256={FP}"
    assert qr.mode == "byte" and not qr.is_micro
    # the symbol holds exactly that payload: a different fingerprint gives a different matrix
    assert list(qr.matrix) != list(make_qr("27787-03", FP.replace("AB", "AC", 1)).matrix)
    import segno

    assert list(segno.make(qr_payload("27787-03", FP), error="m", micro=False).matrix) == list(qr.matrix)


def test_missing_node_folder_fails_cleanly(tmp_path, capsys):
    assert main([str(tmp_path / "none"), "-o", str(tmp_path / "l.svg")]) == 2
    assert "identity.json" in capsys.readouterr().err


def test_label_from_a_folder_made_by_issue_cert(tmp_path):
    from provisioning import pki

    ca_key, ca = pki.create_ca("ca")
    _, cert = pki.issue_client_cert(ca_key, ca, "27787-05")
    pki.write_cert(tmp_path / "node.crt", cert)
    assert main([str(tmp_path), "-o", str(tmp_path / "l.svg")]) == 0
    svg = (tmp_path / "l.svg").read_text()
    assert "27787-05" in svg and pki.fingerprint(cert)[:20] in svg
