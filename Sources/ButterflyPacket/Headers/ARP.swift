// ARP for Ethernet and IPv4 (RFC 826, "Packet format"); the gratuitous form is the ARP
// Announcement of RFC 5227 §2.3 (a request with sender IP = target IP, target MAC zero).
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |     hardware type = 1         |     protocol type = 0x0800    |  0
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |   hlen = 6    |   plen = 4    |  operation (1 request, 2 reply)  4
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                  sender MAC (octets 0-3)                      |  8
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |  sender MAC (octets 4-5)      |  sender IPv4 (octets 0-1)     | 12
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |  sender IPv4 (octets 2-3)     |  target MAC (octets 0-1)      | 16
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                  target MAC (octets 2-5)                      | 20
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                  target IPv4                                  | 24
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   28 bytes

/// ARP over Ethernet for IPv4 only. Parse functions take a pointer to the ARP message (after the
/// Ethernet header); build functions write a whole frame (Ethernet + ARP, 42 bytes; the driver
/// pads to the 60-byte minimum).
public enum ARP {
    /// Length of the ARP message for Ethernet/IPv4.
    @inlinable public static var length: Int { 28 }
    /// Ethernet header + ARP message.
    @inlinable public static var frameLength: Int { 42 }
    @inlinable public static var request: UInt16 { 1 }
    @inlinable public static var reply: UInt16 { 2 }

    /// The fields of an Ethernet/IPv4 ARP message.
    public struct Message: Equatable, Sendable {
        public var operation: UInt16
        public var senderMAC: UInt64
        public var senderIP: UInt32
        public var targetMAC: UInt64
        public var targetIP: UInt32

        @inlinable
        public init(operation: UInt16, senderMAC: UInt64, senderIP: UInt32, targetMAC: UInt64, targetIP: UInt32) {
            self.operation = operation
            self.senderMAC = senderMAC
            self.senderIP = senderIP
            self.targetMAC = targetMAC
            self.targetIP = targetIP
        }

        /// A sender announcing its own address (gratuitous ARP / RFC 5227 announcement).
        @inlinable public var isGratuitous: Bool { senderIP == targetIP }
    }

    /// The message at `arp`, or `nil` unless it is Ethernet (1) / IPv4 (0x0800) with address
    /// lengths 6 and 4 and at least 28 bytes. Any operation code is returned; callers check it.
    @inlinable
    public static func parse(_ arp: UnsafeMutableRawPointer, length available: Int) -> Message? {
        guard available >= length,
            arp.loadBigEndian16(at: 0) == 1,
            arp.loadBigEndian16(at: 2) == EtherType.ipv4,
            arp.loadByte(at: 4) == 6,
            arp.loadByte(at: 5) == 4
        else { return nil }
        return Message(
            operation: arp.loadBigEndian16(at: 6),
            senderMAC: arp.loadMAC(at: 8),
            senderIP: arp.loadBigEndian32(at: 14),
            targetMAC: arp.loadMAC(at: 18),
            targetIP: arp.loadBigEndian32(at: 24)
        )
    }

    /// Writes the 28-byte message at `arp`.
    @inlinable
    public static func write(_ arp: UnsafeMutableRawPointer, _ message: Message) {
        arp.storeBigEndian16(1, at: 0)
        arp.storeBigEndian16(EtherType.ipv4, at: 2)
        arp.storeByte(6, at: 4)
        arp.storeByte(4, at: 5)
        arp.storeBigEndian16(message.operation, at: 6)
        arp.storeMAC(message.senderMAC, at: 8)
        arp.storeBigEndian32(message.senderIP, at: 14)
        arp.storeMAC(message.targetMAC, at: 18)
        arp.storeBigEndian32(message.targetIP, at: 24)
    }

    /// A broadcast request "who has `targetIP`, tell `senderIP`" into `frame` (42 bytes).
    /// Returns the frame length.
    @inlinable
    public static func buildRequest(
        into frame: UnsafeMutableRawPointer,
        senderMAC: UInt64,
        senderIP: UInt32,
        targetIP: UInt32
    ) -> Int {
        Ethernet.write(frame, destination: Ethernet.broadcast, source: senderMAC, etherType: EtherType.arp)
        write(
            frame + Ethernet.headerLength,
            Message(operation: request, senderMAC: senderMAC, senderIP: senderIP, targetMAC: 0, targetIP: targetIP)
        )
        return frameLength
    }

    /// A unicast reply "`senderIP` is at `senderMAC`" to `targetMAC` / `targetIP` into `frame`
    /// (42 bytes). Returns the frame length.
    @inlinable
    public static func buildReply(
        into frame: UnsafeMutableRawPointer,
        senderMAC: UInt64,
        senderIP: UInt32,
        targetMAC: UInt64,
        targetIP: UInt32
    ) -> Int {
        Ethernet.write(frame, destination: targetMAC, source: senderMAC, etherType: EtherType.arp)
        write(
            frame + Ethernet.headerLength,
            Message(
                operation: reply,
                senderMAC: senderMAC,
                senderIP: senderIP,
                targetMAC: targetMAC,
                targetIP: targetIP
            )
        )
        return frameLength
    }

    /// The reply to `request` from the owner of its target address (`ourMAC`), into `frame`.
    @inlinable
    public static func buildReply(
        into frame: UnsafeMutableRawPointer,
        answering request: Message,
        ourMAC: UInt64
    ) -> Int {
        buildReply(
            into: frame,
            senderMAC: ourMAC,
            senderIP: request.targetIP,
            targetMAC: request.senderMAC,
            targetIP: request.senderIP
        )
    }

    /// A gratuitous ARP (RFC 5227 announcement: broadcast request, sender IP = target IP,
    /// target MAC zero) into `frame` (42 bytes). Returns the frame length.
    @inlinable
    public static func buildGratuitous(into frame: UnsafeMutableRawPointer, mac: UInt64, ip: UInt32) -> Int {
        buildRequest(into: frame, senderMAC: mac, senderIP: ip, targetIP: ip)
    }
}
