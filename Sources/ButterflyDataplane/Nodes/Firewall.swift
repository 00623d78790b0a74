import ButterflyPacket

/// The firewall of one NIC: its security groups (compiled into a `FirewallPolicy`) plus
/// connection tracking in the NIC's own zone of the worker's `ConnectionTable`.
///
/// ```
///  frame ─► not IP (ARP…) ─────────────────────────────────────────────────────► pass
///        ─► later fragment ─► its first fragment passed? ───────────── yes ─► pass │ no ─► fragment
///        ─► neighbour discovery, DHCP server→client (toward the guest) ─────────► pass
///        ─► tracked connection? ─ policy changed since? re-check the opening rule ─┐
///               │ yes: TCP state machine ─► invalid ─► invalid-tcp-state          │ no longer allowed:
///               │                          └► pass (refresh deadline)             │ forget it, go on ▼
///        ─► ICMP error about a tracked connection, to the quoted packet's sender ─► pass
///        ─► rules: inbound (source, dst port) / outbound (destination, dst port; none = any)
///               │ no ─► no-rule-inbound / not-allowed-outbound
///               └ yes ─► opener (TCP SYN, UDP, echo request, SCTP, other protocols)?
///                          track it (table full of established ─► conntrack-full) ─► pass
/// ```
/// A stray TCP segment (ACK, RST, FIN) that a rule allows passes, but opens nothing: its
/// answer needs a rule of its own. Connections are checked again lazily: a new policy changes
/// the NIC's generation, and the first packet of each connection re-checks the rule that let
/// it open, so a rule change costs nothing per connection at the time it is made.
public enum FirewallDirection: Sendable {
    /// Sent by the NIC's guest (outbound).
    case fromGuest
    /// Delivered to the NIC's guest (inbound).
    case toGuest
}

/// The worker's firewall node: owns the connection table (every NIC's zone) and the fragment
/// table; the per-NIC part is the `FirewallPolicy` passed with each frame.
public final class Firewall {
    public let connections: ConnectionTable
    let fragments = FragmentTable()
    /// The worker's clock, set once per pass (monotonic seconds). Kept behind a pointer the
    /// object owns: read per packet, a stored `var` would cost a dynamic exclusivity check
    /// on every read.
    private let clock = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    public var now: UInt32 {
        @inline(__always) get { clock.pointee }
        set { clock.pointee = newValue }
    }

    public init(connectionCapacity: Int) {
        connections = ConnectionTable(capacity: connectionCapacity)
        clock.initialize(to: 0)
    }

    deinit { clock.deallocate() }

    /// The verdict for one frame of the NIC in worker slot `slot`, whose zone is `zone`
    /// (nil = pass). `headers` is the frame's walk (`FrameHeaders.walk`).
    public func filter(
        _ data: UnsafeMutableRawPointer,
        headers: FrameHeaders,
        direction: FirewallDirection,
        slot: Int,
        zone: UInt32,
        policy: FirewallPolicy
    ) -> DropReason? {
        verdict(data, headers: headers, direction: direction, slot: slot, zone: zone, policy: policy)
    }

    /// `filter`, always inlined into the worker's loops, as the walk and anti-spoofing are:
    /// passed through a call, the walk's result is copied right after its narrow stores and the
    /// copy stalls on store forwarding (PERFORMANCE.md, "Hardened anti-spoofing").
    @inline(always)
    func verdict(
        _ data: UnsafeMutableRawPointer,
        headers: FrameHeaders,
        direction: FirewallDirection,
        slot: Int,
        zone: UInt32,
        policy: FirewallPolicy
    ) -> DropReason? {
        switch headers.network {
        case .other: return nil
        case .malformed: return .malformedIP
        case .ipv4, .ipv6: break
        }
        let toGuest = direction == .toGuest
        let protocolNumber = headers.ipProtocol
        // IPv6 names a datagram by addresses and identification only (RFC 8200 §4.5): a later
        // fragment's header gives the fragmentable part's first header, which is not the
        // upper-layer protocol when extension headers follow the fragment header.
        let fragmentProtocol = headers.network == .ipv4 ? protocolNumber : 0
        if headers.fragment == .later {
            let known = fragments.allows(
                zone: zone,
                toGuest: toGuest,
                ipProtocol: fragmentProtocol,
                source: headers.source,
                destination: headers.destination,
                identification: headers.fragmentID,
                now: now
            )
            return known ? nil : .fragment
        }
        if Self.alwaysAllowed(headers, toGuest: toGuest) { return nil }
        let verdict = track(headers, data: data, toGuest: toGuest, slot: slot, zone: zone, policy: policy)
        if verdict == nil && headers.fragment == .first {
            fragments.allow(
                zone: zone,
                toGuest: toGuest,
                ipProtocol: fragmentProtocol,
                source: headers.source,
                destination: headers.destination,
                identification: headers.fragmentID,
                now: now
            )
        }
        return verdict
    }

    /// Neighbour discovery both ways (RFC 4861 types 133–137) and DHCP/DHCPv6 server replies
    /// toward a guest. (Guests sending server replies or router advertisements are stopped by
    /// anti-spoofing before they get here.)
    @inline(__always)
    static func alwaysAllowed(_ headers: FrameHeaders, toGuest: Bool) -> Bool {
        if headers.ipProtocol == IPProtocol.icmpv6 && headers.network == .ipv6 {
            return headers.icmpType >= 133 && headers.icmpType <= 137
        }
        if headers.ipProtocol == IPProtocol.udp {
            if toGuest {
                return (headers.sourcePort == 67 && headers.destinationPort == 68)
                    || (headers.sourcePort == 547 && headers.destinationPort == 546)
            }
            // DHCP discovery before the guest has an address, to any server (BUTTERFLY-COMPAT §7).
            return (headers.sourcePort == 68 && headers.destinationPort == 67)
                || (headers.sourcePort == 546 && headers.destinationPort == 547)
        }
        return false
    }

    @inline(always)
    func track(
        _ headers: FrameHeaders,
        data: UnsafeMutableRawPointer,
        toGuest: Bool,
        slot: Int,
        zone: UInt32,
        policy: FirewallPolicy
    ) -> DropReason? {
        let protocolNumber = headers.ipProtocol
        let isICMP = protocolNumber == IPProtocol.icmp || protocolNumber == IPProtocol.icmpv6
        var sourcePort = headers.sourcePort
        var destinationPort = headers.destinationPort
        if isICMP {
            // An echo's identifier is keyed on the side that sent the request, so a request
            // from the peer with the same identifier is never taken for a reply.
            if Self.isEchoRequest(headers) { destinationPort = 0 } else { sourcePort = 0 }
        }
        let key = ConnectionKey(
            zone: zone,
            ipProtocol: protocolNumber,
            local: toGuest ? headers.destination : headers.source,
            remote: toGuest ? headers.source : headers.destination,
            localPort: toGuest ? destinationPort : sourcePort,
            remotePort: toGuest ? sourcePort : destinationPort
        )
        let hash = key.hash
        var entry = isICMP && !Self.isEcho(headers) ? -1 : connections.find(key, hash: hash, now: now)
        if entry >= 0 {
            let tracked = connections.entries[entry]
            if tracked.generation != policy.generation {
                if Self.stillAllowed(tracked, policy: policy) {
                    connections.entries[entry].generation = policy.generation
                } else {
                    connections.remove(entry)
                    entry = -1
                }
            }
        }
        if entry >= 0 {
            let tracked = connections.entries[entry]
            let fromOrigin = (tracked.origin == .toGuest) == toGuest
            if protocolNumber == IPProtocol.tcp {
                if ConnectionState.reopens(tracked.state, flags: headers.tcpFlags) {
                    connections.remove(entry)
                } else {
                    guard let next = ConnectionState.tcp(tracked.state, flags: headers.tcpFlags, fromOrigin: fromOrigin)
                    else { return .invalidTCPState }
                    connections.update(entry, state: next, now: now)
                    return nil
                }
            } else {
                var next: ConnectionState = fromOrigin ? tracked.state : .replied
                // SCTP ABORT (6) or SHUTDOWN COMPLETE (14) ends the association (RFC 9260 §3.2).
                if protocolNumber == IPProtocol.sctp && (headers.tcpFlags == 6 || headers.tcpFlags == 14) {
                    next = .closed
                }
                connections.update(entry, state: next, now: now)
                return nil
            }
        }
        if isICMP
            && isRelatedError(
                isV4: headers.network == .ipv4,
                type: headers.icmpType,
                transportOffset: headers.transportOffset,
                networkEnd: headers.networkEnd,
                destination: headers.destination,
                data: data,
                toGuest: toGuest,
                zone: zone
            )
        {
            return nil
        }
        let allowed =
            toGuest
            ? policy.inbound.allows(ipProtocol: protocolNumber, port: headers.destinationPort, peer: headers.source)
            : policy.outbound?.allows(
                ipProtocol: protocolNumber,
                port: headers.destinationPort,
                peer: headers.destination
            ) ?? true
        guard allowed else { return toGuest ? .noRuleInbound : .notAllowedOutbound }
        let state: ConnectionState
        switch protocolNumber {
        case IPProtocol.tcp:
            // Only a SYN opens; a stray ACK/RST/FIN passes on the rule alone and opens nothing.
            guard
                headers.tcpFlags & (FrameHeaders.TCPFlag.syn | FrameHeaders.TCPFlag.ack | FrameHeaders.TCPFlag.rst)
                    == FrameHeaders.TCPFlag.syn
            else { return nil }
            state = .synSent
        case IPProtocol.icmp, IPProtocol.icmpv6:
            guard Self.isEchoRequest(headers) else { return nil }
            state = .unreplied
        case IPProtocol.sctp:
            // Tracked by ports like UDP (no association state); what ends one opens nothing.
            guard headers.tcpFlags != 6 && headers.tcpFlags != 14 else { return nil }
            state = .unreplied
        default:
            state = .unreplied
        }
        let inserted = connections.insert(
            key,
            hash: hash,
            slot: slot,
            state: state,
            origin: toGuest ? .toGuest : .fromGuest,
            generation: policy.generation,
            now: now
        )
        return inserted >= 0 ? nil : .conntrackFull
    }

    @inline(__always)
    static func isEchoRequest(_ headers: FrameHeaders) -> Bool {
        headers.ipProtocol == IPProtocol.icmp ? headers.icmpType == 8 : headers.icmpType == 128
    }

    @inline(__always)
    static func isEcho(_ headers: FrameHeaders) -> Bool {
        headers.ipProtocol == IPProtocol.icmp
            ? headers.icmpType == 8 || headers.icmpType == 0 : headers.icmpType == 128 || headers.icmpType == 129
    }

    /// Whether the rule that let a connection open still lets it open under `policy` (after a
    /// rule, member or address change).
    static func stillAllowed(_ entry: ConnectionEntry, policy: FirewallPolicy) -> Bool {
        let key = entry.key
        let isICMP = key.ipProtocol == IPProtocol.icmp || key.ipProtocol == IPProtocol.icmpv6
        switch entry.origin {
        case .toGuest:
            return policy.inbound.allows(
                ipProtocol: key.ipProtocol,
                port: isICMP ? 0 : key.localPort,
                peer: key.remote
            )
        case .fromGuest:
            guard policy.owns(key.local) else { return false }
            return policy.outbound?.allows(
                ipProtocol: key.ipProtocol,
                port: isICMP ? 0 : key.remotePort,
                peer: key.remote
            )
                ?? true
        }
    }

    /// An ICMP error (destination unreachable, time exceeded, parameter problem, packet too big)
    /// quoting a packet of a tracked connection of this NIC (RFC 792, RFC 4443 §2.4).
    /// Takes the walk's fields, not the walk: a call taking the struct needs it in memory, and
    /// that copy, made right after the walk's narrow stores, stalled on store forwarding on every
    /// frame (a tenth of `fromGuest` on the local chain), ICMP or not.
    func isRelatedError(
        isV4: Bool,
        type: UInt8,
        transportOffset: Int,
        networkEnd: Int,
        destination errorDestination: UInt128,
        data: UnsafeMutableRawPointer,
        toGuest: Bool,
        zone: UInt32
    ) -> Bool {
        guard isV4 ? (type == 3 || type == 11 || type == 12) : (type >= 1 && type <= 4) else { return false }
        let inner = transportOffset + 8
        var source: UInt128
        var destination: UInt128
        var innerProtocol: UInt8
        var ports: Int
        if isV4 {
            guard inner + 20 <= networkEnd else { return false }
            let headerLength = Int(data.loadByte(at: inner) & 0x0F) * 4
            guard headerLength >= 20 else { return false }
            innerProtocol = data.loadByte(at: inner + 9)
            // Where the connection table keeps IPv4 (FrameHeaders: IPv4-mapped).
            source = FrameHeaders.ipv4Mapped | UInt128(data.loadBigEndian32(at: inner + 12))
            destination = FrameHeaders.ipv4Mapped | UInt128(data.loadBigEndian32(at: inner + 16))
            ports = inner + headerLength
        } else {
            guard inner + 40 <= networkEnd else { return false }
            innerProtocol = data.loadByte(at: inner + 6)
            source = data.loadBigEndian128(at: inner + 8)
            destination = data.loadBigEndian128(at: inner + 24)
            // Not an IPv6 packet anyone sent (see FrameHeaders.walkIPv6), nor one of our IPv4 flows.
            guard !FrameHeaders.isIPv4Mapped(source) && !FrameHeaders.isIPv4Mapped(destination) else { return false }
            ports = inner + 40
        }
        guard ports + 8 <= networkEnd else { return false }
        // An error goes back to the sender of the packet it quotes (as nf_conntrack checks): one
        // addressed to anyone else would carry a payload past the rules in the error's name.
        guard errorDestination == source else { return false }
        var sourcePort = data.loadBigEndian16(at: ports)
        var destinationPort = data.loadBigEndian16(at: ports + 2)
        if innerProtocol == IPProtocol.icmp || innerProtocol == IPProtocol.icmpv6 {
            // The quoted echo's identifier, on the side that sent the request (as `track` keys it).
            let identifier = data.loadBigEndian16(at: ports + 4)
            let innerType = data.loadByte(at: ports)
            let isRequest = innerType == 8 || innerType == 128
            sourcePort = isRequest ? identifier : 0
            destinationPort = isRequest ? 0 : identifier
        }
        // The quoted packet went the other way: toward the guest's peer when the error comes in.
        let key = ConnectionKey(
            zone: zone,
            ipProtocol: innerProtocol,
            local: toGuest ? source : destination,
            remote: toGuest ? destination : source,
            localPort: toGuest ? sourcePort : destinationPort,
            remotePort: toGuest ? destinationPort : sourcePort
        )
        return connections.find(key, hash: key.hash, now: now) >= 0
    }
}
