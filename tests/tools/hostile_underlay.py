#!/usr/bin/env python3
"""Sends malformed and misdirected frames at a VTEP, for the bad-packet tests.

usage: hostile_underlay.py IFACE DST_MAC SRC_IP DST_IP KNOWN_VNI

Run inside the namespace that owns IFACE (a veth whose peer is the daemon's underlay).
Each frame exercises one drop reason of the daemon's underlay; the script prints one line
per frame: "<reason> <length>". Addresses must be documentation ranges.
"""
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: bytes, dst: bytes, payload: bytes, proto=17, flags_fragment=0x4000, options=b"", bad_checksum=False):
    ihl = 5 + len(options) // 4
    header = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, 0, ihl * 4 + len(payload), 0, flags_fragment, 64, proto, 0,
                         src, dst) + options
    value = checksum(header)
    if bad_checksum:
        value ^= 0x5555
    header = header[:10] + struct.pack("!H", value) + header[12:]
    return header + payload


def udp(dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", 50000, dport, 8 + len(payload), 0) + payload


def vxlan(vni: int, inner: bytes, flags=0x08) -> bytes:
    return struct.pack("!B3sI", flags, b"\0\0\0", vni << 8) + inner


def main():
    iface, dst_mac, src_ip, dst_ip, known_vni = sys.argv[1:6]
    dst = bytes.fromhex(dst_mac.replace(":", ""))
    src = bytes.fromhex("020000000bad")
    s_ip, d_ip = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    vni = int(known_vni)
    inner = bytes.fromhex("ffffffffffff" "020000000001" "0800") + bytes(46)
    eth = dst + src + b"\x08\x00"
    frames = [
        ("truncated", eth),
        ("bad-vxlan-flags", eth + ipv4(s_ip, d_ip, udp(4789, vxlan(vni, inner, flags=0x00)))),
        ("unknown-vni", eth + ipv4(s_ip, d_ip, udp(4789, vxlan(0xABCDE, inner)))),
        ("ip-options-or-fragment", eth + ipv4(s_ip, d_ip, udp(4789, vxlan(vni, inner)), options=b"\x01\x01\x01\x00")),
        ("ip-options-or-fragment", eth + ipv4(s_ip, d_ip, udp(4789, vxlan(vni, inner)), flags_fragment=0x2000)),
        ("not-for-this-vtep", eth + ipv4(s_ip, socket.inet_aton("198.51.100.77"), udp(4789, vxlan(vni, inner)))),
        ("not-vxlan", eth + ipv4(s_ip, d_ip, udp(5000, b"hello"))),
        ("not-vxlan", eth + ipv4(s_ip, d_ip, udp(4789, vxlan(vni, inner)), bad_checksum=True)),
        ("truncated", eth + ipv4(s_ip, d_ip, udp(4789, vxlan(vni, inner[:4])))),
        ("not-vxlan", dst + src + b"\x88\xb5" + bytes(50)),
    ]
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((iface, 0))
        for reason, frame in frames:
            raw.send(frame)
            print(reason, len(frame))
    # Super-frames (UDP segmentation offload, docs/OFFLOADS.md): a packet socket with
    # PACKET_VNET_HDR hands the kernel one frame with a virtio-net header; across the veth it
    # reaches the daemon whole and is cut there.
    #  - 100 datagrams of 40 zero bytes each: every one a VXLAN header without the I flag;
    #  - the same with a bad outer IPv4 header checksum: refused whole by the port.
    payload = bytes(40 * 100)
    for reason, bad in (("bad-vxlan-flags x100", False), ("port-receive", True)):
        udp_header = struct.pack("!HHHH", 50000, 4789, 8 + len(payload), 0)
        datagram = ipv4(s_ip, d_ip, udp_header + payload, bad_checksum=bad)
        total = 8 + len(payload)
        pseudo = s_ip + d_ip + struct.pack("!BBH", 0, 17, total)
        partial = (~checksum(pseudo)) & 0xFFFF  # the folded pseudo-header sum, not complemented
        datagram = datagram[:26] + struct.pack("!H", partial) + datagram[28:]
        # flags NEEDS_CSUM, gso UDP_L4, hdr_len 42, gso_size 40, csum_start 34, csum_offset 6
        header = struct.pack("<BBHHHH", 1, 5, 42, 40, 34, 6)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
            raw.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
            raw.bind((iface, 0))
            raw.send(header + eth + datagram)
            print(reason, len(eth + datagram))


if __name__ == "__main__":
    main()
