"""A private network for one node and a packet capture of everything it sends and receives.

NodeNetwork puts the node in a network namespace of its own, joined to this host by a veth pair (the
"air": IPv4 only, MTU 1500, no offloads, so each frame is one packet as a modem would send it). The
broker, content server and district tools stay on the host and listen on the host end's address; only
the node's packets cross the pair. Capture reads the host end with an AF_PACKET socket (root; no
tcpdump needed) and keeps each IPv4 packet's size, direction, ports and TCP payload; the interface's
own counters (/sys/class/net/IF/statistics) are read beside it as a cross-check.

    with NodeNetwork("t1") as net, Capture(net.host_if) as cap:
        subprocess.Popen(net.wrap(["speaker-node", "run", ...]))

Everything created here is removed by close() (namespace, veth pair, capture thread).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ETH_HEADER = 14
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
IPPROTO_TCP = 6
MTU = 1500


class NetworkUnavailable(RuntimeError):
    """No root, no `ip`, or the kernel refuses namespaces/veth: the caller skips with this message."""


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise NetworkUnavailable(f"{' '.join(argv)}: {result.stderr.strip()[:200]}")


class NodeNetwork:
    """Namespace spk-TAG with veth spkhTAG (host, HOST_IP) <-> spknTAG (node, NODE_IP)."""

    def __init__(self, tag: str, subnet: int = 231):
        if os.geteuid() != 0 or not shutil.which("ip"):
            raise NetworkUnavailable("needs root and iproute2 (`ip`) to create a network namespace")
        tag = tag[:8]
        self.ns, self.host_if, self.node_if = f"spk-{tag}", f"spkh{tag}", f"spkn{tag}"
        octet = (os.getpid() % 250) + 1
        self.host_ip, self.node_ip = f"10.{subnet}.{octet}.1", f"10.{subnet}.{octet}.2"
        self.offloads_off = False
        self._created: list[str] = []

    def open(self) -> "NodeNetwork":
        try:
            _run(["ip", "netns", "add", self.ns])
            self._created.append("ns")
            _run(["ip", "link", "add", self.host_if, "mtu", str(MTU), "type", "veth", "peer", "name", self.node_if,
                  "mtu", str(MTU), "netns", self.ns])
            self._created.append("link")
            # IPv6 off on both ends before they come up: no router solicitations, MLD or DAD on the "air".
            Path(f"/proc/sys/net/ipv6/conf/{self.host_if}/disable_ipv6").write_text("1")
            self.inside(["sh", "-c", f"echo 1 > /proc/sys/net/ipv6/conf/{self.node_if}/disable_ipv6"])
            _run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if])
            self.inside(["ip", "addr", "add", f"{self.node_ip}/30", "dev", self.node_if])
            self.offloads_off = self._offloads_off()
            _run(["ip", "link", "set", self.host_if, "up"])
            self.inside(["ip", "link", "set", self.node_if, "up"])
            self.inside(["ip", "link", "set", "lo", "up"])
        except (NetworkUnavailable, OSError):
            self.close()
            raise
        return self

    def _offloads_off(self) -> bool:
        """Segmentation and receive offloads off, so captured frames are the packets a link would carry."""
        ethtool = shutil.which("ethtool")
        if not ethtool:
            return False
        features = ["tso", "off", "gso", "off", "gro", "off"]
        try:
            _run([ethtool, "-K", self.host_if, *features])
            self.inside([ethtool, "-K", self.node_if, *features])
        except NetworkUnavailable:
            return False
        return True

    def inside(self, argv: list[str]) -> None:
        _run(self.wrap(argv))

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run inside the node's namespace."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def counters(self) -> dict[str, int]:
        """The host end's interface counters (frames, Ethernet header included)."""
        base = Path(f"/sys/class/net/{self.host_if}/statistics")
        return {name: int((base / name).read_text()) for name in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")}

    def close(self) -> None:
        if "link" in self._created:
            subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)
        if "ns" in self._created:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)
        self._created = []

    def __enter__(self) -> "NodeNetwork":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Packet:
    t: float                 # time.monotonic() when the capture read it
    up: bool                 # node -> host
    ip_bytes: int            # IPv4 total length: what the link carries above layer 2
    proto: int
    node_port: int           # the node's port (TCP/UDP), 0 otherwise
    peer_port: int
    flags: int = 0           # TCP flags
    seq: int = 0
    payload: bytes = b""     # TCP payload


@dataclass
class Capture:
    """AF_PACKET capture of one interface in a thread. `packets` (IPv4) and `other_frames` (ARP...)."""

    interface: str
    node_ip: str
    packets: list[Packet] = field(default_factory=list)
    other_frames: list[tuple[float, int]] = field(default_factory=list)   # (t, frame bytes)
    frames_bytes: int = 0     # every frame seen, Ethernet header included (to compare with the counters)

    def __post_init__(self):
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._sock.bind((self.interface, 0))
        self._sock.settimeout(0.2)
        self._node = socket.inet_aton(self.node_ip)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                frame, address = self._sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self._take(frame, address[2] == PACKET_OUTGOING, time.monotonic())

    def _take(self, frame: bytes, outgoing: bool, now: float) -> None:
        with self._lock:
            self.frames_bytes += len(frame)
            (ethertype,) = struct.unpack_from("!H", frame, 12)
            if ethertype != ETH_P_IP:
                self.other_frames.append((now, len(frame)))
                return
            ip = frame[ETH_HEADER:]
            ihl = (ip[0] & 0x0F) * 4
            (total,) = struct.unpack_from("!H", ip, 2)
            proto = ip[9]
            up = ip[12:16] == self._node and not outgoing
            packet = Packet(now, up, total, proto, 0, 0)
            if proto == IPPROTO_TCP:
                sport, dport, seq, _ack, offset_flags = struct.unpack_from("!HHIIH", ip, ihl)
                doff = (offset_flags >> 12) * 4
                packet.node_port, packet.peer_port = (sport, dport) if up else (dport, sport)
                packet.flags, packet.seq = offset_flags & 0x1FF, seq
                packet.payload = bytes(ip[ihl + doff:total])
            self.packets.append(packet)

    def snapshot(self) -> list[Packet]:
        with self._lock:
            return list(self.packets)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- TLS records on a captured TCP connection ----------------------------------------------------------
SYN, FIN, RST = 0x02, 0x01, 0x04


@dataclass
class TlsRecord:
    t: float             # time of the packet that carried its first byte
    up: bool
    content_type: int    # 23 application data, 22 handshake, 20 change cipher spec, 21 alert
    length: int          # bytes on the TCP stream: 5-byte header + body
    ip_bytes: float = 0.0   # its share of the packets that carried it, and of the bare ACKs answering them
    kind: str = ""       # set by the caller's attribution


def tls_records(packets: list[Packet]) -> tuple[list[TlsRecord], float]:
    """Cut one TCP connection's two byte streams into TLS records (nothing is decrypted) and give each
    its IP bytes: the packets that carried it (header cost shared by payload bytes) and the bare ACKs
    sent back for them. Returns (records, IP bytes of packets carrying no record: SYN/FIN/...)."""
    records: list[TlsRecord] = []
    unassigned = 0.0
    streams = {True: _Stream(), False: _Stream()}
    last_data: dict[bool, list[tuple[TlsRecord, float]]] = {True: [], False: []}
    for packet in packets:
        if packet.payload:
            shares = streams[packet.up].feed(packet, records)
            last_data[packet.up] = shares
            for record, share in shares:
                record.ip_bytes += share * packet.ip_bytes
            if not shares:
                unassigned += packet.ip_bytes
        elif packet.flags & (SYN | FIN | RST) or not last_data[not packet.up]:
            unassigned += packet.ip_bytes
        else:
            # A bare ACK: a cost of what it acknowledges (the latest data the other side sent).
            for record, share in last_data[not packet.up]:
                record.ip_bytes += share * packet.ip_bytes
            last_data[not packet.up] = []
    return records, unassigned


class _Stream:
    def __init__(self):
        self.next_seq: int | None = None
        self.buffer = b""
        self.current: TlsRecord | None = None
        self.left = 0          # body bytes of `current` still to come

    def feed(self, packet: Packet, sink: list[TlsRecord]) -> list[tuple[TlsRecord, float]]:
        data = packet.payload
        if self.next_seq is not None:
            behind = (self.next_seq - packet.seq) % (1 << 32)
            if 0 < behind < (1 << 31):          # a retransmission: only the new tail counts as stream
                data = data[behind:] if behind < len(data) else b""
        self.next_seq = (packet.seq + len(packet.payload)) % (1 << 32)
        carried: dict[int, list] = {}
        total = len(packet.payload)
        for piece in self._cut(data, packet, sink):
            record, size = piece
            carried.setdefault(id(record), [record, 0])[1] += size
        if not total:
            return []
        return [(record, size / total) for record, size in carried.values()]

    def _cut(self, data: bytes, packet: Packet, sink: list[TlsRecord]):
        i = 0
        while i < len(data):
            if self.left:
                take = min(self.left, len(data) - i)
                self.left -= take
                i += take
                yield self.current, take
                continue
            need = 5 - len(self.buffer)
            self.buffer += data[i:i + need]
            taken = min(need, len(data) - i)
            i += taken
            if len(self.buffer) < 5:
                if self.current is not None:
                    yield self.current, taken
                continue
            content_type, _version, length = struct.unpack("!BHH", self.buffer)
            self.buffer = b""
            self.current = TlsRecord(packet.t, packet.up, content_type, 5 + length)
            sink.append(self.current)
            self.left = length
            yield self.current, 5
