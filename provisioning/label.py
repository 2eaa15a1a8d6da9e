"""`speaker-provision label`: a printable cabinet-door label with the node id, commune and a QR code.

The QR code carries the node id and certificate fingerprint, so a technician (or an auditor from the
provincial department) can scan the door and compare with what the node reports over MQTT.
SVG always (segno, pure Python); --png adds a PNG of the QR code alone (the label text needs a font
renderer, which we do not ship).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape

from node.errors import ConfigError
from provisioning.i18n import msg

WIDTH, HEIGHT = 600, 260


def qr_payload(node_id: str, fingerprint: str) -> str:
    return f"SPEAKER-NODE;id={node_id};sha256={fingerprint}"


def make_qr(node_id: str, fingerprint: str):
    import segno

    return segno.make(qr_payload(node_id, fingerprint), error="m", micro=False)


def render_label_svg(ident: dict) -> str:
    node_id, fp = ident["node_id"], ident["fingerprint"]
    qr = make_qr(node_id, fp)
    buf = io.BytesIO()
    qr.save(buf, kind="svg", xmldecl=False, svgns=True, nl=False, scale=4, border=2)
    qr_svg = buf.getvalue().decode()
    qr_svg = qr_svg.replace("<svg ", f'<svg x="{WIDTH - 230}" y="20" ', 1)
    fp_half = len(fp) // 2 + 1  # two lines of 16 bytes each
    lines = [
        ("28", "bold", f"Node {node_id}"),
        ("18", "normal", f"Commune / Xã: {ident.get('commune', node_id[:5])}"),
        (
            "18",
            "normal",
            f"District / Huyện: {ident.get('district', '?')}   Province / Tỉnh: {ident.get('province', '?')}",
        ),
        ("13", "normal", "Certificate SHA-256 / Dấu vân tay:"),
        ("12", "normal", fp[:fp_half]),
        ("12", "normal", fp[fp_half:]),
    ]
    y, texts = 50, []
    for size, weight, text in lines:
        texts.append(
            f'<text x="20" y="{y}" font-family="DejaVu Sans, sans-serif" font-size="{size}" '
            f'font-weight="{weight}">{escape(text)}</text>'
        )
        y += int(size) + 16
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}">\n'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white" stroke="black" stroke-width="2"/>\n'
        + "\n".join(texts)
        + "\n"
        + qr_svg
        + "\n</svg>\n"
    )


def load_identity(node_dir: Path) -> dict:
    """identity.json from `node new`, or the id and fingerprint read from node.crt (issue-cert --out-dir)."""
    path = Path(node_dir) / "identity.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise ConfigError([f"cannot read {path}: {exc}"]) from exc
    try:
        from cryptography.x509.oid import NameOID

        from provisioning import pki

        cert = pki.load_cert(Path(node_dir) / "node.crt")
        node_id = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    except (OSError, ValueError, IndexError) as exc:
        raise ConfigError([f"{node_dir} has neither identity.json nor a readable node.crt: {exc}"]) from exc
    return {"node_id": node_id, "fingerprint": pki.fingerprint(cert), "commune": node_id[:5]}


def write_label(node_dir: Path, out: Path, png: bool = False) -> Path:
    ident = load_identity(node_dir)
    out = Path(out)
    out.write_text(render_label_svg(ident), encoding="utf-8")
    if png:
        make_qr(ident["node_id"], ident["fingerprint"]).save(
            str(out.with_suffix(".qr.png")), scale=8, border=2
        )
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speaker-provision label", description="Cabinet-door label (SVG).")
    parser.add_argument("node_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, help="label.svg")
    parser.add_argument("--png", action="store_true", help="also write the QR code as OUTPUT.qr.png")
    args = parser.parse_args(argv)
    try:
        path = write_label(args.node_dir, args.output, args.png)
    except (ConfigError, OSError, ImportError) as exc:
        for problem in getattr(exc, "problems", [str(exc)]):
            print(f"speaker-provision label: {problem}", file=sys.stderr)
        return 2
    print(msg("label_written", path=path))
    return 0
