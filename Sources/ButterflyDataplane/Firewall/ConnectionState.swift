import ButterflyPacket

/// The state of a tracked connection and the rules that move it: a TCP state machine close to
/// what nf_conntrack and NPF track (without sequence windows), and "unreplied / replied" for
/// everything else. Pure functions, unit-tested on their own.
///
/// ```
///  TCP   SYN ─► synSent ─(SYN+ACK or SYN reply)─► synReceived ─(ACK origin)─► established
///        established ─(FIN one side)─► finWait{Origin,Reply} ─(FIN other side)─► lastAck
///        lastAck ─(ACK)─► timeWait          any ─(RST)─► closed
///        timeWait / closed ─(new SYN from either side)─► the entry is replaced by a new one
/// ```
/// A segment that fits none of these (an ACK while only a SYN was seen, a SYN+ACK from the
/// side that opened, a SYN inside an established connection) is invalid: dropped and
/// counted, and it changes nothing.
public enum ConnectionState: UInt8, Sendable, CaseIterable {
    /// Non-TCP: seen in the opening direction only.
    case unreplied
    /// Non-TCP: seen both ways.
    case replied
    case synSent
    case synReceived
    case established
    /// FIN seen from the side that opened, not yet from the other.
    case finWaitOrigin
    /// FIN seen from the side that answered, not yet from the opener.
    case finWaitReply
    /// FIN seen both ways; waiting for the last ACK.
    case lastAck
    case timeWait
    case closed

    public var name: String {
        switch self {
        case .unreplied: "unreplied"
        case .replied: "replied"
        case .synSent: "syn-sent"
        case .synReceived: "syn-received"
        case .established: "established"
        case .finWaitOrigin, .finWaitReply: "fin-wait"
        case .lastAck: "last-ack"
        case .timeWait: "time-wait"
        case .closed: "closed"
        }
    }

    /// True once both sides have spoken (what eviction spares when the table is full).
    @inlinable
    public var isAssured: Bool {
        switch self {
        case .replied, .established, .finWaitOrigin, .finWaitReply, .lastAck: true
        default: false
        }
    }

    /// A TCP segment with `flags`, sent by the connection's opener (`fromOrigin`) or by the
    /// other side, moves the state here; `nil` means the segment is invalid in this state.
    @inlinable
    public static func tcp(_ state: ConnectionState, flags: UInt8, fromOrigin: Bool) -> ConnectionState? {
        let syn = flags & FrameHeaders.TCPFlag.syn != 0
        let ack = flags & FrameHeaders.TCPFlag.ack != 0
        let fin = flags & FrameHeaders.TCPFlag.fin != 0
        if flags & FrameHeaders.TCPFlag.rst != 0 { return syn ? nil : .closed }
        switch state {
        case .synSent:
            if syn && !ack { return fromOrigin ? .synSent : .synReceived }  // retransmit, simultaneous open
            if syn && ack && !fromOrigin { return .synReceived }
            return nil
        case .synReceived:
            // The opener's SYN again, or a SYN+ACK from either side: the answer again, or, after
            // a simultaneous open (RFC 9293 §3.5 figure 7), the opener's own SYN+ACK.
            if syn { return ack || fromOrigin ? .synReceived : nil }
            if fin { return fromOrigin ? .finWaitOrigin : .finWaitReply }
            if ack && fromOrigin { return .established }
            return ack ? .synReceived : nil
        case .established:
            if syn { return ack && !fromOrigin ? .established : nil }  // a late SYN+ACK retransmit
            if fin { return fromOrigin ? .finWaitOrigin : .finWaitReply }
            return .established
        case .finWaitOrigin, .finWaitReply:
            if syn { return nil }
            if fin && fromOrigin != (state == .finWaitOrigin) { return .lastAck }
            return state
        case .lastAck:
            if syn { return nil }
            return ack && !fin ? .timeWait : .lastAck
        case .timeWait:
            return syn ? nil : .timeWait
        case .closed:
            return nil
        case .unreplied, .replied:
            return nil
        }
    }

    /// A SYN (without ACK) that may replace an entry in `state` by a new connection.
    @inlinable
    public static func reopens(_ state: ConnectionState, flags: UInt8) -> Bool {
        (state == .timeWait || state == .closed)
            && flags & (FrameHeaders.TCPFlag.syn | FrameHeaders.TCPFlag.ack)
                == FrameHeaders.TCPFlag.syn
    }

    /// Seconds an entry lives after its last packet (nf_conntrack's defaults).
    @inlinable
    public static func timeout(_ state: ConnectionState, ipProtocol: UInt8) -> UInt32 {
        switch state {
        case .synSent: 120
        case .synReceived: 60
        case .established: 432_000
        case .finWaitOrigin, .finWaitReply: 120
        case .lastAck: 30
        case .timeWait: 120
        case .closed: 10
        case .unreplied:
            ipProtocol == IPProtocol.icmp || ipProtocol == IPProtocol.icmpv6
                ? 30 : ipProtocol == IPProtocol.udp ? 30 : 60
        case .replied:
            switch ipProtocol {
            case IPProtocol.icmp, IPProtocol.icmpv6: 30
            case IPProtocol.udp: 120
            case IPProtocol.sctp: 432_000
            default: 600
            }
        }
    }
}
