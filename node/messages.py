"""Technician-facing text of `speaker-node selftest`, in English and Vietnamese.

The language follows LC_ALL, then LC_MESSAGES, then LANG (the first one that is set): "vi..." gives
Vietnamese, anything else English. Developer-facing errors stay in English and are not listed here.
Every hint says what to look at, in the words a technician uses at the pole.
"""

from __future__ import annotations

import os

SERVICE_HINT = (
    "stop the service first: sudo systemctl stop speaker-node",
    "dừng dịch vụ trước: sudo systemctl stop speaker-node",
)

MESSAGES: dict[str, tuple[str, str]] = {
    # speaker-node wipe
    "wipe_prompt": (
        "This erases the keys, trust file and all records of node {node_id}. Type the node id to confirm: ",
        "Thao tác này xóa khóa, tệp tin cậy và mọi bản ghi của nút {node_id}. Gõ mã nút để xác nhận: ",
    ),
    "wipe_mismatch": ("Node id did not match; nothing erased.", "Mã nút không khớp; không xóa gì."),
    "wipe_erased": ("Erased: {path}", "Đã xóa: {path}"),
    "wipe_done": (
        "Node {node_id} wiped. Revoke its certificate at the district: "
        "speaker-district revoke DIR --node {node_id}",
        "Đã xóa nút {node_id}. Hãy thu hồi chứng thư tại huyện: speaker-district revoke DIR --node {node_id}",
    ),
    "wipe_nothing": ("Nothing to erase.", "Không có gì để xóa."),
    # table
    "title": ("speaker-node self-test, node {node}", "Tự kiểm tra cụm loa, nút {node}"),
    "status_pass": ("PASS", "ĐẠT"),
    "status_warn": ("WARN", "LƯU Ý"),
    "status_fail": ("FAIL", "LỖI"),
    "status_skip": ("SKIP", "BỎ QUA"),
    "all_passed": ("All checks passed.", "Tất cả các mục đều đạt."),
    "some_failed": ("{n} check(s) failed: {ids}", "{n} mục bị lỗi: {ids}"),
    "from_service": ("{detail} (read from the running service)", "{detail} (đọc từ dịch vụ đang chạy)"),
    # config
    "config_ok": ("Configuration {path} loaded", "Đã đọc cấu hình {path}"),
    "config_bad": (
        "Configuration {path} has {n} problem(s): {problems}",
        "Cấu hình {path} có {n} lỗi: {problems}",
    ),
    "config_hint": (
        "Fix the keys listed above in {path}, then run: speaker-node check-config {path}",
        "Sửa các mục nêu trên trong {path}, rồi chạy: speaker-node check-config {path}",
    ),
    # certificate
    "cert_ok": (
        "Node certificate {cn} valid for {days} more days (until {date})",
        "Chứng thư của nút {cn} còn hạn {days} ngày (đến {date})",
    ),
    "cert_soon": (
        "Node certificate {cn} expires in {days} days ({date}): ask the district for a new one",
        "Chứng thư của nút {cn} hết hạn sau {days} ngày ({date}): hãy xin huyện cấp chứng thư mới",
    ),
    "cert_expiring": (
        "Node certificate {cn} expires in {days} days ({date})",
        "Chứng thư của nút {cn} sắp hết hạn: còn {days} ngày ({date})",
    ),
    "cert_expired": (
        "Node certificate {cn} expired on {date}",
        "Chứng thư của nút {cn} đã hết hạn ngày {date}",
    ),
    "cert_not_yet": (
        "Node certificate {cn} is not valid before {date}",
        "Chứng thư của nút {cn} chưa có hiệu lực trước {date}",
    ),
    "cert_unreadable": (
        "Cannot read the certificate or key: {error}",
        "Không đọc được chứng thư hoặc khóa: {error}",
    ),
    "cert_key_mismatch": (
        "The key {key} does not belong to the certificate {cert}",
        "Khóa {key} không khớp với chứng thư {cert}",
    ),
    "cert_wrong_cn": (
        "The certificate is for {cn}, but this node is {node}",
        "Chứng thư cấp cho {cn}, nhưng nút này là {node}",
    ),
    "cert_wrong_ca": (
        "The certificate was not issued by the district CA in {ca}",
        "Chứng thư không do CA của huyện ({ca}) cấp",
    ),
    "hint_cert_renew": (
        "Ask the district for a new node certificate (speaker-district issue-cert) and copy node.crt and "
        "node.key to /etc/speaker-node/",
        "Xin huyện cấp chứng thư mới cho nút (speaker-district issue-cert), chép node.crt và node.key vào "
        "/etc/speaker-node/",
    ),
    "hint_cert_files": (
        "Copy node.crt, node.key and ca.crt of THIS node again from its provisioning bundle",
        "Chép lại node.crt, node.key và ca.crt của ĐÚNG nút này từ gói cài đặt",
    ),
    "hint_clock_first": (
        "If the clock is wrong, fix the clock line first",
        "Nếu đồng hồ sai, hãy xử lý mục đồng hồ trước",
    ),
    # trust
    "trust_ok": (
        "Trust document version {version} valid for {days} more days (until {date})",
        "Tài liệu tin cậy phiên bản {version} còn hạn {days} ngày (đến {date})",
    ),
    "trust_soon": (
        "Trust document version {version} expires in {days} days ({date})",
        "Tài liệu tin cậy phiên bản {version} hết hạn sau {days} ngày ({date})",
    ),
    "trust_expiring": (
        "Trust document version {version} expires in {days} days ({date})",
        "Tài liệu tin cậy phiên bản {version} sắp hết hạn: còn {days} ngày ({date})",
    ),
    "trust_expired": (
        "Trust document version {version} expired on {date}",
        "Tài liệu tin cậy phiên bản {version} đã hết hạn ngày {date}",
    ),
    "trust_unreadable": (
        "Cannot load the trust document {path}: {error}",
        "Không nạp được tài liệu tin cậy {path}: {error}",
    ),
    "hint_trust": (
        "The district must publish a new trust document (the node fetches it when online); or copy "
        "trust.json again from the provisioning bundle",
        "Huyện cần phát hành tài liệu tin cậy mới (nút tự nhận khi có mạng); hoặc chép lại trust.json từ "
        "gói cài đặt",
    ),
    # clock
    "clock_ok": ("System clock synchronised (NTP); now {now}", "Đồng hồ đã đồng bộ (NTP); bây giờ là {now}"),
    "clock_ok_daemon": (
        "The running node trusts its clock (source {src}); now {now}",
        "Nút đang chạy tin cậy đồng hồ của mình (nguồn {src}); bây giờ là {now}",
    ),
    "clock_bad_daemon": (
        "The running node does not trust its clock yet (no signed district time, NTP, RTC or cellular time); "
        "it reads {now}",
        "Nút đang chạy chưa tin cậy đồng hồ (chưa có giờ ký của huyện, NTP, RTC hay giờ mạng di động); "
        "đang chỉ {now}",
    ),
    "clock_bad": (
        "System clock not synchronised (no {file}); it reads {now}",
        "Đồng hồ chưa đồng bộ (không có {file}); đang chỉ {now}",
    ),
    "hint_clock": (
        "Check 4G data, the district's time service and NTP (timedatectl timesync-status); the node will "
        "not accept time-bound commands until its time is trusted",
        "Kiểm tra dữ liệu 4G, dịch vụ giờ của huyện và NTP (timedatectl timesync-status); nút sẽ không nhận "
        "lệnh có thời hạn cho đến khi giờ được tin cậy",
    ),
    # broker
    "broker_ok": ("Connected over mTLS to {ok}", "Đã kết nối mTLS tới {ok}"),
    "broker_ok_partly": (
        "Connected over mTLS to {ok}; not reachable: {bad}",
        "Đã kết nối mTLS tới {ok}; không tới được: {bad}",
    ),
    "broker_bad": ("No broker accepted the connection: {bad}", "Không máy chủ nào nhận kết nối: {bad}"),
    "hint_broker": (
        "Check 4G data (see the modem line), the broker addresses in the config, and that the district has "
        "not revoked this node's certificate",
        "Kiểm tra dữ liệu 4G (xem mục modem), địa chỉ máy chủ trong cấu hình, và chứng thư của nút chưa bị "
        "huyện thu hồi",
    ),
    # modem
    "modem_disabled": (
        "Modem disabled in the config ([modem] enabled = false)",
        "Modem bị tắt trong cấu hình ([modem] enabled = false)",
    ),
    "modem_ok": (
        "SIM ready, registered ({reg}) on {op}, {act}, {signal}",
        "SIM sẵn sàng, đã đăng ký mạng ({reg}) {op}, {act}, {signal}",
    ),
    "modem_weak": (
        "SIM ready, registered ({reg}) on {op}, {act}, WEAK signal {signal}",
        "SIM sẵn sàng, đã đăng ký mạng ({reg}) {op}, {act}, sóng YẾU {signal}",
    ),
    "hint_modem_weak": (
        "Check the antenna cable and point the antenna away from the cabinet metal",
        "Kiểm tra dây anten và hướng anten ra khỏi vỏ tủ kim loại",
    ),
    "modem_absent": ("No modem at {port}", "Không thấy modem tại {port}"),
    "hint_modem_absent": (
        "Check the modem's USB cable and power (ls -l /dev/ttyModemAT /dev/ttyUSB*)",
        "Kiểm tra cáp USB và nguồn của modem (ls -l /dev/ttyModemAT /dev/ttyUSB*)",
    ),
    "modem_no_answer": (
        "The modem on {port} does not answer ({error})",
        "Modem tại {port} không trả lời ({error})",
    ),
    "hint_modem_no_answer": (
        "Power-cycle the modem; check that ModemManager is not holding the AT port (docs/modem.md)",
        "Tắt bật lại modem; kiểm tra ModemManager không chiếm cổng AT (docs/modem.md)",
    ),
    "modem_no_sim": ("No SIM card detected", "Không thấy thẻ SIM"),
    "hint_modem_no_sim": (
        "Power off, insert the SIM card firmly in its tray, power on",
        "Tắt nguồn, lắp chặt thẻ SIM vào khay, bật lại nguồn",
    ),
    "modem_sim_locked": ("The SIM card is not ready ({sim})", "Thẻ SIM chưa sẵn sàng ({sim})"),
    "hint_modem_sim_locked": (
        "Use a SIM without a PIN lock (remove the PIN in a phone first)",
        "Dùng SIM không khóa PIN (gỡ mã PIN bằng điện thoại trước)",
    ),
    "modem_not_registered": (
        "SIM ready but not registered on a network ({reg}), {signal}",
        "SIM sẵn sàng nhưng chưa đăng ký được mạng ({reg}), {signal}",
    ),
    "hint_modem_not_registered": (
        "Check the antenna cable, and that the SIM has an active data plan",
        "Kiểm tra dây anten, và thẻ SIM còn gói cước dữ liệu",
    ),
    "modem_service_no_status": (
        "The running service holds the modem and has written no status yet",
        "Dịch vụ đang chạy giữ modem và chưa ghi trạng thái",
    ),
    "reg_home": ("home network", "mạng nhà"),
    "reg_roaming": ("roaming", "chuyển vùng"),
    "reg_searching": ("searching", "đang tìm mạng"),
    "reg_denied": ("registration denied", "bị từ chối đăng ký"),
    "reg_not_registered": ("not registered", "chưa đăng ký"),
    "reg_unknown": ("unknown", "không rõ"),
    "no_signal": ("no signal reading", "không đọc được sóng"),
    # relays
    "relay_ok_feedback": (
        "Switched on and off; the feedback input followed",
        "Đã đóng và ngắt; tín hiệu phản hồi đi theo đúng",
    ),
    "relay_ok": (
        "Switched on and off (no feedback input: listen for the relay click)",
        "Đã đóng và ngắt (không có phản hồi: hãy nghe tiếng rơ-le kêu)",
    ),
    "relay_ok_audible": ("Switched on for the tone and off again", "Đã đóng khi phát âm thử và ngắt lại"),
    "relay_stuck_off": (
        "Commanded ON but the feedback input stayed OFF: relay stuck or feedback wire loose",
        "Lệnh ĐÓNG nhưng phản hồi vẫn NGẮT: rơ-le kẹt hoặc dây phản hồi lỏng",
    ),
    "relay_stuck_on": (
        "Commanded OFF but the feedback input stayed ON: relay contacts stuck closed",
        "Lệnh NGẮT nhưng phản hồi vẫn ĐÓNG: tiếp điểm rơ-le bị dính",
    ),
    "hint_relay_stuck": (
        "Check the amplifier relay, its fuse and the feedback wire (GPIO {pin})",
        "Kiểm tra rơ-le bộ khuếch đại, cầu chì và dây phản hồi (GPIO {pin})",
    ),
    "relay_readback": ("GPIO {pin} did not take the commanded level", "GPIO {pin} không nhận mức đã ra lệnh"),
    "relay_open_failed": (
        "Cannot drive the relay pins: {error}",
        "Không điều khiển được chân rơ-le: {error}",
    ),
    "hint_relay_open": (
        "Run on the node as root (sudo); check that no other program uses these GPIO pins",
        "Chạy trên nút bằng quyền root (sudo); kiểm tra không chương trình nào khác dùng các chân GPIO này",
    ),
    "relay_service": ("The running service controls the relays", "Dịch vụ đang chạy điều khiển rơ-le"),
    "relay_not_configured": ("Not configured in [relays]", "Chưa khai báo trong [relays]"),
    "relay_no_amplifier": (
        "No amplifier relay in [relays]: zones not tested",
        "Không có rơ-le bộ khuếch đại trong [relays]: không thử vùng loa",
    ),
    # audible tone
    "audio_silent": (
        "Silent test; run with --audible to hear a 1 kHz tone on every zone",
        "Kiểm tra im lặng; chạy với --audible để nghe âm 1 kHz trên mọi vùng loa",
    ),
    "audio_ok": (
        "Played a 1 s 1 kHz tone on zones {zones} ({output})",
        "Đã phát âm thử 1 kHz trong 1 giây trên vùng {zones} ({output})",
    ),
    "audio_failed": ("The tone did not play: {error}", "Không phát được âm thử: {error}"),
    "hint_audio": (
        "Check the sound card / USB audio, the cable to the amplifier input, and [audio] device in "
        "the config",
        "Kiểm tra card âm thanh / USB audio, dây vào đầu vào bộ khuếch đại, và mục [audio] device "
        "trong cấu hình",
    ),
    # inputs
    "door_ok": ("Cabinet door closed", "Cửa tủ đang đóng"),
    "door_bad": ("Cabinet door open", "Cửa tủ đang mở"),
    "hint_door": (
        "Close the cabinet door; if it is closed, check the door switch and its wire",
        "Đóng cửa tủ; nếu đã đóng, kiểm tra công tắc cửa và dây nối",
    ),
    "mains_ok": ("Mains power present", "Có điện lưới"),
    "mains_bad": ("Mains power absent", "Mất điện lưới"),
    "hint_mains": (
        "Check the mains supply, the breaker and the mains-sense wire",
        "Kiểm tra nguồn điện lưới, aptomat và dây báo điện lưới",
    ),
    "amp_fault_ok": ("Amplifier reports no fault", "Bộ khuếch đại không báo lỗi"),
    "amp_fault_bad": ("Amplifier fault / protection active", "Bộ khuếch đại đang báo lỗi / bảo vệ"),
    "hint_amp_fault": (
        "Check the amplifier: overheating, shorted speaker line, supply; switch it off and on again",
        "Kiểm tra bộ khuếch đại: quá nhiệt, chập dây loa, nguồn; tắt rồi bật lại",
    ),
    "input_not_configured": ("Not configured in [inputs]", "Chưa khai báo trong [inputs]"),
    "input_open_failed": ("Cannot read GPIO {pin}: {error}", "Không đọc được GPIO {pin}: {error}"),
    "input_service_no_status": (
        "The running service holds the inputs and has written no status yet",
        "Dịch vụ đang chạy giữ các đầu vào và chưa ghi trạng thái",
    ),
    # disk
    "disk_ok": ("{free} MB free in {path}", "Còn trống {free} MB tại {path}"),
    "disk_low": (
        "Only {free} MB free in {path} (needs at least {need} MB)",
        "Chỉ còn {free} MB tại {path} (cần ít nhất {need} MB)",
    ),
    "hint_disk": (
        "Free space (sudo journalctl --vacuum-size=50M) or replace the SD card with a larger one",
        "Giải phóng dung lượng (sudo journalctl --vacuum-size=50M) hoặc thay thẻ nhớ lớn hơn",
    ),
    "disk_unreadable": (
        "Cannot read free space of {path}: {error}",
        "Không đọc được dung lượng trống {path}: {error}",
    ),
    "service_hint": SERVICE_HINT,
    "internal_error": ("The check itself failed: {error}", "Bản thân mục kiểm tra bị lỗi: {error}"),
    "hint_internal": ("Report this line to the district technician", "Báo dòng này cho kỹ thuật viên huyện"),
    # libVLC, the service, unusable broker addresses (issue 10)
    "libvlc_ok": (
        "libVLC {version} loads; audio outputs: {outputs}",
        "libVLC {version} nạp được; ngõ ra âm thanh: {outputs}",
    ),
    "libvlc_bad": ("libVLC does not load: {error}", "Không nạp được libVLC: {error}"),
    "libvlc_no_output": (
        "libVLC {version} loads but has no '{output}' audio output (outputs: {outputs})",
        "libVLC {version} nạp được nhưng không có ngõ ra '{output}' (có: {outputs})",
    ),
    "hint_libvlc": (
        "Install libvlc5 and vlc-plugin-base (first boot installs them from the card's bundle: see "
        "/boot/firmware/speaker-node/firstboot.log)",
        "Cài libvlc5 và vlc-plugin-base (lần khởi động đầu cài từ gói trên thẻ: xem "
        "/boot/firmware/speaker-node/firstboot.log)",
    ),
    "service_ok": ("speaker-node.service is active", "speaker-node.service đang chạy"),
    "service_bad": (
        "speaker-node.service is {state} ({result})",
        "speaker-node.service đang ở trạng thái {state} ({result})",
    ),
    "service_absent": ("speaker-node.service is not installed here", "speaker-node.service chưa được cài ở đây"),
    "hint_service": (
        "See: sudo journalctl -u speaker-node -b (and speaker-node/firstboot.log on the boot partition)",
        "Xem: sudo journalctl -u speaker-node -b (và speaker-node/firstboot.log trên phân vùng boot)",
    ),
    "broker_unusable": ("Broker address cannot work: {bad}", "Địa chỉ máy chủ không dùng được: {bad}"),
    "hint_broker_address": (
        "Fix [broker] servers in /etc/speaker-node/node.toml (the 4G link is not the problem), or make a "
        "new card with speaker-provision node new --broker HOST:PORT",
        "Sửa [broker] servers trong /etc/speaker-node/node.toml (không phải lỗi 4G), hoặc làm thẻ mới với "
        "speaker-provision node new --broker HOST:PORT",
    ),
}


def language(environ=None) -> str:
    """'vi' or 'en' from LC_ALL / LC_MESSAGES / LANG, the first that is set (as gettext does)."""
    env = os.environ if environ is None else environ
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var)
        if value:
            return "vi" if value.lower().startswith("vi") else "en"
    return "en"


def msg(message_id: str, environ=None, **values) -> str:
    """The message in the technician's language (from the environment)."""
    return text(message_id, language(environ), **values)


def text(message_id: str, lang: str = "en", **values) -> str:
    en, vi = MESSAGES[message_id]
    return (vi if lang == "vi" else en).format(**values)
