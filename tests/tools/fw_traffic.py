#!/usr/bin/env python3
"""Traffic for the firewall tests (Tests/ButterflyIntegrationTests/FirewallTests.swift), run inside
a VM namespace.

  serve READY_FILE LIFETIME PROTO:PORT...
      Echo server for TCP and UDP (IPv4 and IPv6 on one socket) and SCTP. The kernel has no SCTP
      sockets, so SCTP travels as raw IP protocol 132: a common header (RFC 9260 §3.1) and one
      DATA chunk; the server answers with the ports swapped. The firewall only reads the ports.
      Touches READY_FILE once every socket is bound; exits by itself after LIFETIME seconds.
  probe TARGET...
      TARGET = PROTO,ADDRESS,PORT,TIMEOUT[,SOURCE] with PROTO tcp, udp, sctp or icmp (PORT unused
      for icmp); SOURCE picks the source address. All targets are tried at once; prints one line
      per target, in order: "TARGET ok" when the echo came back within TIMEOUT seconds, "TARGET
      blocked" when nothing came back, "TARGET refused" when the peer answered with a reset or an
      ICMP error.
  stream ADDRESS PORT SECONDS RATE STOP_FILE
      UDP datagrams to an echo server at RATE per second, for SECONDS or until STOP_FILE exists;
      prints "sent N echoed M".
  session ADDRESS PORT SECONDS STOP_FILE
      One TCP connection to an echo server, a message every 50 ms, for SECONDS or until STOP_FILE
      exists; prints "exchanged N longest-gap SECONDS", or "broken after N: ERROR" and exits 1.
  ra INTERFACE PREFIX
      One IPv6 router advertisement (RFC 4861 §4.2) to all nodes, announcing PREFIX/64 for
      address autoconfiguration (router lifetime 0: not a default router).
"""
import os
import random
import socket
import struct
import sys
import threading
import time

SCTP = 132


def crc32c(data):
    """RFC 9260 Appendix B (CRC32c, reflected polynomial 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def sctp_packet(source_port, destination_port, token):
    """Common header (verification tag 0) and one DATA chunk carrying `token`."""
    chunk_length = 16 + len(token)
    chunk = struct.pack("!BBHIHHI", 0, 3, chunk_length, 1, 0, 0, 0) + token
    chunk += b"\0" * (-len(chunk) % 4)
    header = struct.pack("!HHII", source_port, destination_port, 0, 0)
    checksum = crc32c(header + chunk)
    # Linux stores the CRC little-endian in the checksum field.
    return header[:8] + struct.pack("<I", checksum) + chunk


def sctp_parse(packet):
    """(source port, destination port, token) of a packet built by sctp_packet, or None."""
    if len(packet) < 28 or packet[12] != 0:
        return None
    source_port, destination_port = struct.unpack("!HH", packet[:4])
    chunk_length = struct.unpack("!H", packet[14:16])[0]
    return source_port, destination_port, packet[28 : 12 + chunk_length]


def strip_ipv4(family, data):
    """Raw IPv4 sockets hand over the IP header too; raw IPv6 sockets do not."""
    if family == socket.AF_INET:
        return data[(data[0] & 0x0F) * 4 :]
    return data


def family_of(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET


# --- serve


def serve_tcp(port):
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", port))
    listener.listen(64)

    def echo(connection):
        with connection:
            connection.settimeout(10)
            try:
                while True:
                    data = connection.recv(65536)
                    if not data:
                        return
                    connection.sendall(data)
            except OSError:
                return

    def accept():
        while True:
            connection, _ = listener.accept()
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    return accept


def serve_udp(port):
    server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", port))

    def echo():
        while True:
            data, peer = server.recvfrom(65536)
            server.sendto(data, peer)

    return echo


def serve_sctp(ports, family):
    raw = socket.socket(family, socket.SOCK_RAW, SCTP)

    def echo():
        while True:
            data, peer = raw.recvfrom(65536)
            parsed = sctp_parse(strip_ipv4(family, data))
            if parsed and parsed[1] in ports:
                reply = sctp_packet(parsed[1], parsed[0], parsed[2])
                raw.sendto(reply, (peer[0], 0) if family == socket.AF_INET else (peer[0], 0, 0, peer[3]))

    return echo


def serve(ready_file, lifetime, specs):
    loops = []
    sctp_ports = set()
    for spec in specs:
        proto, port = spec.split(":")
        if proto == "tcp":
            loops.append(serve_tcp(int(port)))
        elif proto == "udp":
            loops.append(serve_udp(int(port)))
        elif proto == "sctp":
            sctp_ports.add(int(port))
        else:
            raise SystemExit(f"unknown protocol {proto}")
    if sctp_ports:
        loops += [serve_sctp(sctp_ports, socket.AF_INET), serve_sctp(sctp_ports, socket.AF_INET6)]
    for loop in loops:
        threading.Thread(target=loop, daemon=True).start()
    with open(ready_file, "w") as ready:
        ready.write(f"{os.getpid()}\n")
    time.sleep(float(lifetime))


# --- probe

RESEND = 0.4  # seconds between retries of a datagram probe


def probe_tcp(address, port, timeout, source):
    token = os.urandom(8).hex().encode()
    try:
        bind = (source, 0) if source else None
        with socket.create_connection((address, port), timeout=timeout, source_address=bind) as connection:
            connection.settimeout(timeout)
            connection.sendall(token)
            received = b""
            while len(received) < len(token):
                data = connection.recv(64)
                if not data:
                    return "refused"
                received += data
            return "ok" if received == token else "garbled"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "blocked"
    except OSError as error:
        return f"error:{error.errno}"


def probe_datagram(sock, send, matches, deadline):
    """Sends, and resends every RESEND seconds, until `matches` accepts a reply or time runs out."""
    next_send = 0.0
    while True:
        now = time.monotonic()
        if now >= deadline:
            return "blocked"
        if now >= next_send:
            send()
            next_send = now + RESEND
        sock.settimeout(max(0.01, min(deadline, next_send) - now))
        try:
            data, peer = sock.recvfrom(65536)
        except (socket.timeout, TimeoutError):
            continue
        except ConnectionRefusedError:
            return "refused"
        if matches(data, peer):
            return "ok"


def probe_udp(address, port, timeout, source):
    token = os.urandom(8).hex().encode()
    with socket.socket(family_of(address), socket.SOCK_DGRAM) as sock:
        if source:
            sock.bind((source, 0))
        sock.connect((address, port))
        return probe_datagram(
            sock, lambda: sock.send(token), lambda data, _: data == token, time.monotonic() + timeout
        )


def probe_sctp(address, port, timeout, source):
    family = family_of(address)
    token = os.urandom(8).hex().encode()
    source_port = random.randint(20000, 60000)
    with socket.socket(family, socket.SOCK_RAW, SCTP) as sock:
        if source:
            sock.bind((source, 0))
        packet = sctp_packet(source_port, port, token)

        def matches(data, peer):
            parsed = sctp_parse(strip_ipv4(family, data))
            return parsed == (port, source_port, token) and peer[0] == socket.inet_ntop(
                family, socket.inet_pton(family, address)
            )

        return probe_datagram(sock, lambda: sock.sendto(packet, (address, 0)), matches, time.monotonic() + timeout)


def checksum16(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def probe_icmp(address, timeout, source):
    family = family_of(address)
    identifier = random.randint(1, 0xFFFF)
    payload = os.urandom(16)
    if family == socket.AF_INET:
        proto, request_type, reply_type = socket.IPPROTO_ICMP, 8, 0
    else:
        proto, request_type, reply_type = socket.IPPROTO_ICMPV6, 128, 129
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        if source:
            sock.bind((source, 0))
        sequence = [0]

        def send():
            sequence[0] += 1
            header = struct.pack("!BBHHH", request_type, 0, 0, identifier, sequence[0])
            if family == socket.AF_INET:
                # The kernel fills the ICMPv6 checksum itself, not the ICMP one.
                header = header[:2] + struct.pack("!H", checksum16(header + payload)) + header[4:]
            sock.sendto(header + payload, (address, 0))

        def matches(data, peer):
            message = strip_ipv4(family, data)
            if len(message) < 8 or message[0] != reply_type:
                return False
            return struct.unpack("!H", message[4:6])[0] == identifier and message[8:] == payload

        return probe_datagram(sock, send, matches, time.monotonic() + timeout)


def probe(targets):
    results = [None] * len(targets)

    def run(index, target):
        proto, address, port, timeout, *source = target.split(",")
        port, timeout, source = int(port), float(timeout), source[0] if source else None
        try:
            if proto == "tcp":
                results[index] = probe_tcp(address, port, timeout, source)
            elif proto == "udp":
                results[index] = probe_udp(address, port, timeout, source)
            elif proto == "sctp":
                results[index] = probe_sctp(address, port, timeout, source)
            elif proto == "icmp":
                results[index] = probe_icmp(address, timeout, source)
            else:
                results[index] = f"unknown-protocol:{proto}"
        except OSError as error:
            results[index] = f"error:{error.errno}"

    threads = [threading.Thread(target=run, args=item) for item in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for target, result in zip(targets, results):
        print(f"{target} {result}")


# --- stream


def stream(address, port, seconds, rate, stop_file):
    sent = 0
    echoed = [0]
    with socket.socket(family_of(address), socket.SOCK_DGRAM) as sock:
        sock.connect((address, port))
        stop = threading.Event()

        def receive():
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    sock.recv(2048)
                    echoed[0] += 1
                except (socket.timeout, TimeoutError, ConnectionRefusedError):
                    pass

        receiver = threading.Thread(target=receive)
        receiver.start()
        start = time.monotonic()
        interval = 1.0 / rate
        while time.monotonic() - start < seconds and not (sent % 50 == 0 and os.path.exists(stop_file)):
            try:
                sock.send(b"butterfly-stream-%08d" % sent)
            except ConnectionRefusedError:
                pass
            sent += 1
            delay = start + sent * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        time.sleep(0.3)
        stop.set()
        receiver.join()
    print(f"sent {sent} echoed {echoed[0]}")


# --- session


def session(address, port, seconds, stop_file):
    exchanged = 0
    longest_gap = 0.0
    start = last = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=5) as connection:
            connection.settimeout(5)
            while time.monotonic() - start < seconds and not os.path.exists(stop_file):
                token = b"butterfly-session-%08d" % exchanged
                connection.sendall(token)
                received = b""
                while len(received) < len(token):
                    data = connection.recv(64)
                    if not data:
                        raise ConnectionError("closed by the peer")
                    received += data
                now = time.monotonic()
                longest_gap = max(longest_gap, now - last)
                last = now
                exchanged += 1
                time.sleep(0.05)
    except OSError as error:
        print(f"broken after {exchanged}: {error!r}")
        sys.exit(1)
    print(f"exchanged {exchanged} longest-gap {longest_gap:.3f}")


# --- ra


def router_advertisement(interface, prefix):
    index = socket.if_nametoindex(interface)
    # RFC 4861 §4.2: type 134, cur hop limit 64, no flags, router lifetime 0, reachable and
    # retrans timers 0; then a prefix information option (§4.6.2) with L and A set.
    message = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 0, 0, 0)
    message += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 3600, 1800, 0) + socket.inet_pton(socket.AF_INET6, prefix)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.sendto(message, ("ff02::1", 0, 0, index))


def main(arguments):
    if not arguments:
        raise SystemExit(__doc__)
    command, rest = arguments[0], arguments[1:]
    if command == "serve":
        serve(rest[0], rest[1], rest[2:])
    elif command == "probe":
        probe(rest)
    elif command == "stream":
        stream(rest[0], int(rest[1]), float(rest[2]), float(rest[3]), rest[4])
    elif command == "session":
        session(rest[0], int(rest[1]), float(rest[2]), rest[3])
    elif command == "ra":
        router_advertisement(rest[0], rest[1])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
