"""Technician-facing messages in English or Vietnamese, chosen from LC_ALL / LC_MESSAGES / LANG.

Only messages a field technician reads at the pole or the laptop live here; developer-facing errors
stay in English.
"""

from __future__ import annotations

from node.messages import language  # one locale rule for node and provisioning

MESSAGES: dict[str, tuple[str, str]] = {
    "node_created": ("Node {node_id} created in {path}", "Đã tạo nút {node_id} tại {path}"),
    "cert_fingerprint": ("Certificate fingerprint (SHA-256): {fp}", "Dấu vân tay chứng thư (SHA-256): {fp}"),
    "node_exists": (
        "{path} already exists: a node keeps its key; revoke it and pick another cluster number",
        "{path} đã tồn tại: mỗi nút giữ khóa riêng; hãy thu hồi và chọn số cụm khác",
    ),
    "card_other_node": (
        "This card already holds node {other} (fingerprint {fp}); refusing to write node {node_id}. "
        "Use --force to overwrite it.",
        "Thẻ nhớ này đã chứa nút {other} (dấu vân tay {fp}); không ghi nút {node_id}. "
        "Dùng --force để ghi đè.",
    ),
    "card_written": (
        "Card ready for node {node_id} ({os}). "
        "Put it in the Pi and power on; first boot takes a few minutes.",
        "Thẻ nhớ đã sẵn sàng cho nút {node_id} ({os}). "
        "Cắm vào Pi và bật nguồn; lần khởi động đầu mất vài phút.",
    ),
    "label_written": ("Label written to {path}", "Đã ghi nhãn vào {path}"),
    "copying": ("Copying {name}", "Đang chép {name}"),
    "no_boot_partition": (
        "No FAT boot partition found in {image}",
        "Không tìm thấy phân vùng khởi động FAT trong {image}",
    ),
    "not_boot_partition": (
        "{path} does not look like a Raspberry Pi OS boot partition (no cmdline.txt)",
        "{path} không giống phân vùng khởi động Raspberry Pi OS (thiếu cmdline.txt)",
    ),
    "os_unknown": (
        "Cannot tell Bookworm from Trixie on this card; pass --os bookworm or --os trixie",
        "Không xác định được phiên bản Bookworm hay Trixie trên thẻ; hãy dùng --os bookworm hoặc --os trixie",
    ),
}


def msg(message_id: str, environ=None, **values) -> str:
    en, vi = MESSAGES[message_id]
    return (vi if language(environ) == "vi" else en).format(**values)
