#!/usr/bin/env python3
"""A hostile guest's frames, and a victim's view of them (AntiSpoofTests).

    hostile_guest.py attack IFACE CONFIG.json
        Sends each hostile frame `count` times on IFACE (an AF_PACKET raw socket), then one
        honest marker datagram, and prints the kinds it sent.
    hostile_guest.py capture IFACE CONFIG.json READY_FILE TIMEOUT
        Listens on IFACE, creates READY_FILE once listening, and stops at the marker: prints
        {"marker": true, "arrived": {kind: frames}} — which hostile frames reached the victim.
        Exits 2 if the marker did not arrive within TIMEOUT seconds.

CONFIG.json holds the addresses: hostile_mac, hostile_ipv4, victim_ipv4, victim_ipv6,
other_ipv4, other_ipv6, other_ipv6_tagged, other_link_local, count, marker. The hostile frames:

    na-destopts  neighbour advertisement of other_ipv6 with the hostile MAC, behind a
                 Destination Options header
    ns-spoofed   neighbour solicitation of victim_ipv6 from other_link_local, with the
                 hostile MAC as source link-layer address
    ra           router advertisement: default route and prefix 2001:db8:bad::/64
    arp-tagged   ARP request for victim_ipv4 from other_ipv4 at the hostile MAC, in an
                 802.1Q priority tag (VLAN 0: the victim's kernel takes it as untagged)
    na-tagged    neighbour advertisement of other_ipv6_tagged with the hostile MAC, in an
                 802.1Q priority tag
    dhcp-offer   DHCP server reply (UDP 67 -> 68) offering victim_ipv4
"""
import ipaddress
import json
import os
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def mac_bytes(text):
    return bytes.fromhex(text.replace(":", ""))


def v4(text):
    return ipaddress.IPv4Address(text).packed


def v6(text):
    return ipaddress.IPv6Address(text).packed


def link_local(mac):
    """RFC 4291 appendix A: modified EUI-64 identifier under fe80::/64."""
    identifier = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return b"\xfe\x80" + bytes(6) + identifier


def checksum(data):
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def ethernet(destination, source, ether_type, payload, tagged=False):
    tag = struct.pack("!HH", 0x8100, 0x0000) if tagged else b""
    return destination + source + tag + struct.pack("!H", ether_type) + payload


def multicast_mac(address):
    """RFC 2464 §7: 33:33 and the last four bytes of the IPv6 multicast address."""
    return b"\x33\x33" + address[12:]


def ipv6(source, destination, next_header, payload, destination_options=False):
    """IPv6 with hop limit 255 (RFC 4861 requires it); `payload` is an ICMPv6 message whose
    checksum (RFC 8200 §8.1) is filled in here."""
    pseudo = source + destination + struct.pack("!I3xB", len(payload), next_header)
    payload = payload[:2] + struct.pack("!H", checksum(pseudo + payload)) + payload[4:]
    first = next_header
    chain = b""
    if destination_options:
        # Next header, length 0 (8 bytes), PadN (type 1) covering the remaining 6 bytes.
        chain = bytes([next_header, 0, 1, 4, 0, 0, 0, 0])
        first = 60
    header = struct.pack("!IHBB", 0x60000000, len(chain) + len(payload), first, 255)
    return header + source + destination + chain + payload


def ipv4_udp(source, destination, source_port, destination_port, data):
    udp = struct.pack("!HHHH", source_port, destination_port, 8 + len(data), 0) + data
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, source, destination)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def neighbor_advertisement(target, mac):
    # Type 136, code 0, override flag; target link-layer address option (type 2).
    return struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target + bytes([2, 1]) + mac


def frames(config):
    hostile = mac_bytes(config["hostile_mac"])
    hostile_link_local = link_local(hostile)
    all_nodes = v6("ff02::1")
    broadcast = b"\xff" * 6
    victim6 = v6(config["victim_ipv6"])
    solicited = v6("ff02::1:ff00:0")[:13] + victim6[13:]

    advertisement = neighbor_advertisement(v6(config["other_ipv6"]), hostile)
    tagged_advertisement = neighbor_advertisement(v6(config["other_ipv6_tagged"]), hostile)
    solicitation = struct.pack("!BBHI", 135, 0, 0, 0) + victim6 + bytes([1, 1]) + hostile
    router_advertisement = (
        # Hop limit 64, no flags, router lifetime 1800 s, reachable and retransmit timers 0.
        struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
        + bytes([1, 1])
        + hostile
        # Prefix information (RFC 4861 §4.6.2): /64, on-link + autonomous, lifetimes.
        + struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0)
        + v6("2001:db8:bad::")
    )
    offer = (
        struct.pack("!BBBBIHH", 2, 1, 6, 0, 0x42424242, 0, 0x8000)
        + bytes(4)
        + v4(config["victim_ipv4"])
        + v4(config["hostile_ipv4"])
        + bytes(4)
        + bytes(16)
        + bytes(64 + 128)
        + bytes([0x63, 0x82, 0x53, 0x63])
        + bytes([53, 1, 2])  # DHCPOFFER
        + bytes([54, 4]) + v4(config["hostile_ipv4"])  # server identifier
        + bytes([3, 4]) + v4(config["hostile_ipv4"])  # router
        + bytes([51, 4, 0, 0, 0x0E, 0x10])  # lease time
        + bytes([255])
    )
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hostile + v4(config["other_ipv4"]) + bytes(6) + v4(
        config["victim_ipv4"]
    )
    return {
        "na-destopts": ethernet(
            multicast_mac(all_nodes),
            hostile,
            0x86DD,
            ipv6(hostile_link_local, all_nodes, 58, advertisement, destination_options=True),
        ),
        "ns-spoofed": ethernet(
            multicast_mac(solicited),
            hostile,
            0x86DD,
            ipv6(v6(config["other_link_local"]), solicited, 58, solicitation),
        ),
        "ra": ethernet(
            multicast_mac(all_nodes), hostile, 0x86DD, ipv6(hostile_link_local, all_nodes, 58, router_advertisement)
        ),
        "arp-tagged": ethernet(broadcast, hostile, 0x0806, arp, tagged=True),
        "na-tagged": ethernet(
            multicast_mac(all_nodes),
            hostile,
            0x86DD,
            ipv6(hostile_link_local, all_nodes, 58, tagged_advertisement),
            tagged=True,
        ),
        "dhcp-offer": ethernet(
            broadcast, hostile, 0x0800, ipv4_udp(v4(config["hostile_ipv4"]), b"\xff" * 4, 67, 68, offer)
        ),
    }


def marker(config):
    hostile = mac_bytes(config["hostile_mac"])
    data = ("butterfly-marker-" + config["marker"]).encode()
    return ethernet(b"\xff" * 6, hostile, 0x0800, ipv4_udp(v4(config["hostile_ipv4"]), b"\xff" * 4, 9, 9, data))


def untagged(frame):
    """The frame as the victim's packet socket shows it: the kernel strips an 802.1Q tag."""
    if frame[12:14] == b"\x81\x00":
        return frame[:12] + frame[16:]
    return frame


def attack(interface, config):
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((interface, 0))
        sent = {}
        for kind, frame in frames(config).items():
            for _ in range(config["count"]):
                raw.send(frame)
            sent[kind] = config["count"]
        raw.send(marker(config))
    print(json.dumps({"sent": sent}))


def capture(interface, config, ready_file, timeout):
    hostile = {kind: (frame, untagged(frame)) for kind, frame in frames(config).items()}
    end_marker = ("butterfly-marker-" + config["marker"]).encode()
    arrived = {}
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as raw:
        raw.bind((interface, 0))
        with open(ready_file, "w") as ready:
            ready.write("listening\n")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(json.dumps({"marker": False, "arrived": arrived}))
                sys.exit(2)
            raw.settimeout(remaining)
            try:
                frame, address = raw.recvfrom(65535)
            except socket.timeout:
                continue
            if address[2] == PACKET_OUTGOING:
                continue
            if end_marker in frame:
                print(json.dumps({"marker": True, "arrived": arrived}))
                return
            for kind, shapes in hostile.items():
                if any(frame[: len(shape)] == shape for shape in shapes):
                    arrived[kind] = arrived.get(kind, 0) + 1


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("attack", "capture"):
        sys.exit(__doc__)
    with open(sys.argv[3]) as file:
        config = json.load(file)
    if sys.argv[1] == "attack":
        attack(sys.argv[2], config)
    else:
        if len(sys.argv) != 6:
            sys.exit(__doc__)
        capture(sys.argv[2], config, sys.argv[4], float(sys.argv[5]))


if __name__ == "__main__":
    main()
