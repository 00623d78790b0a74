#!/usr/bin/env python3
"""Sends one raw Ethernet frame given in hex on an interface: send_frame.py IFACE HEX [COUNT]."""
import socket
import sys

with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
    raw.bind((sys.argv[1], 0))
    for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 1):
        raw.send(bytes.fromhex(sys.argv[2]))
