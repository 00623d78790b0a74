#!/usr/bin/env python3
"""Moves a known byte stream over one TCP connection and prints "<bytes> <sha256>" on each end.

    tcp_transfer.py receive ADDRESS PORT        accepts one connection, reads to EOF
    tcp_transfer.py send ADDRESS PORT BYTES     connects, writes BYTES pseudo-random bytes

The sender's bytes come from a fixed-seed generator, so both ends can be compared without
shipping the data around; large writes let the sender's stack build TSO super-frames.
"""
import hashlib
import random
import socket
import sys


def main() -> None:
    mode, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    digest = hashlib.sha256()
    total = 0
    if mode == "receive":
        with socket.socket(family, socket.SOCK_STREAM) as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((address, port))
            listener.listen(1)
            print("ready", flush=True)
            connection, _ = listener.accept()
            with connection:
                while chunk := connection.recv(1 << 20):
                    digest.update(chunk)
                    total += len(chunk)
    else:
        remaining = int(sys.argv[4])
        generator = random.Random(7)
        with socket.create_connection((address, port), timeout=30) as connection:
            while remaining > 0:
                chunk = generator.randbytes(min(remaining, 1 << 20))
                connection.sendall(chunk)
                digest.update(chunk)
                total += len(chunk)
                remaining -= len(chunk)
    print(total, digest.hexdigest(), flush=True)


if __name__ == "__main__":
    main()
