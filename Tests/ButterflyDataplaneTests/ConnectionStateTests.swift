import ButterflyDataplane
import Testing

/// The TCP state machine of connection tracking and the timeouts of every state.
@Suite struct ConnectionStateTests {
    static let fin: UInt8 = 0x01
    static let syn: UInt8 = 0x02
    static let rst: UInt8 = 0x04
    static let psh: UInt8 = 0x08
    static let ack: UInt8 = 0x10

    /// One segment: its flags and whether the connection's opener sent it.
    typealias Segment = (flags: UInt8, fromOrigin: Bool)

    /// Runs `segments` from `start` and returns the state after each (nil once invalid; an
    /// invalid segment changes nothing, so the walk goes on from the previous state).
    static func walk(_ segments: [Segment], from start: ConnectionState = .synSent) -> [ConnectionState?] {
        var state = start
        var result: [ConnectionState?] = []
        for segment in segments {
            let next = ConnectionState.tcp(state, flags: segment.flags, fromOrigin: segment.fromOrigin)
            result.append(next)
            if let next { state = next }
        }
        return result
    }

    @Test func threeWayHandshakeThenData() {
        // The opener's SYN created the entry in synSent.
        let states = Self.walk([
            (Self.syn | Self.ack, false),
            (Self.ack, true),
            (Self.ack | Self.psh, true),
            (Self.ack, false),
        ])
        #expect(states == [.synReceived, .established, .established, .established])
    }

    @Test func retransmittedSYNAndSYNACKKeepTheirState() {
        #expect(ConnectionState.tcp(.synSent, flags: Self.syn, fromOrigin: true) == .synSent)
        #expect(ConnectionState.tcp(.synReceived, flags: Self.syn | Self.ack, fromOrigin: false) == .synReceived)
        #expect(ConnectionState.tcp(.synReceived, flags: Self.syn, fromOrigin: true) == .synReceived)
        // A late SYN+ACK retransmit after the handshake completed.
        #expect(ConnectionState.tcp(.established, flags: Self.syn | Self.ack, fromOrigin: false) == .established)
    }

    @Test func simultaneousOpen() {
        // RFC 9293 §3.5 figure 7: both sides send SYN, then both answer with SYN+ACK.
        let states = Self.walk([
            (Self.syn, false),
            (Self.syn | Self.ack, true),
            (Self.syn | Self.ack, false),
            (Self.ack, true),
        ])
        #expect(states == [.synReceived, .synReceived, .synReceived, .established])
    }

    @Test func closeFromTheOpener() {
        let states = Self.walk(
            [
                (Self.fin | Self.ack, true),
                (Self.ack, false),
                (Self.fin | Self.ack, false),
                (Self.ack, true),
            ],
            from: .established
        )
        #expect(states == [.finWaitOrigin, .finWaitOrigin, .lastAck, .timeWait])
    }

    @Test func closeFromTheResponder() {
        let states = Self.walk(
            [
                (Self.fin | Self.ack, false),
                (Self.ack | Self.psh, true),  // the opener may still send
                (Self.fin | Self.ack, false),  // a retransmitted FIN changes nothing
                (Self.fin | Self.ack, true),
                (Self.ack, false),
            ],
            from: .established
        )
        #expect(states == [.finWaitReply, .finWaitReply, .finWaitReply, .lastAck, .timeWait])
    }

    @Test func simultaneousClose() {
        let states = Self.walk(
            [(Self.fin | Self.ack, true), (Self.fin | Self.ack, false), (Self.ack, true), (Self.ack, false)],
            from: .established
        )
        #expect(states == [.finWaitOrigin, .lastAck, .timeWait, .timeWait])
        #expect(ConnectionState.tcp(.lastAck, flags: Self.fin | Self.ack, fromOrigin: true) == .lastAck)
    }

    @Test func finDuringTheHandshake() {
        #expect(ConnectionState.tcp(.synReceived, flags: Self.fin | Self.ack, fromOrigin: true) == .finWaitOrigin)
        #expect(ConnectionState.tcp(.synReceived, flags: Self.fin | Self.ack, fromOrigin: false) == .finWaitReply)
        #expect(ConnectionState.tcp(.synSent, flags: Self.fin, fromOrigin: true) == nil)
    }

    @Test func resetFromEitherSideClosesFromEveryState() {
        let tcpStates: [ConnectionState] = [
            .synSent, .synReceived, .established, .finWaitOrigin, .finWaitReply, .lastAck, .timeWait, .closed,
        ]
        for state in tcpStates {
            for fromOrigin in [true, false] {
                #expect(ConnectionState.tcp(state, flags: Self.rst, fromOrigin: fromOrigin) == .closed, "\(state)")
                #expect(ConnectionState.tcp(state, flags: Self.rst | Self.ack, fromOrigin: fromOrigin) == .closed)
                #expect(ConnectionState.tcp(state, flags: Self.rst | Self.syn, fromOrigin: fromOrigin) == nil)
            }
        }
    }

    @Test func invalidSegments() {
        // A stray ACK (or data) while only the SYN was seen.
        #expect(ConnectionState.tcp(.synSent, flags: Self.ack, fromOrigin: false) == nil)
        #expect(ConnectionState.tcp(.synSent, flags: Self.ack, fromOrigin: true) == nil)
        #expect(ConnectionState.tcp(.synSent, flags: Self.ack | Self.psh, fromOrigin: false) == nil)
        // SYN+ACK from the side that sent the SYN.
        #expect(ConnectionState.tcp(.synSent, flags: Self.syn | Self.ack, fromOrigin: true) == nil)
        // A SYN inside an established connection, from either side.
        #expect(ConnectionState.tcp(.established, flags: Self.syn, fromOrigin: true) == nil)
        #expect(ConnectionState.tcp(.established, flags: Self.syn, fromOrigin: false) == nil)
        #expect(ConnectionState.tcp(.established, flags: Self.syn | Self.ack, fromOrigin: true) == nil)
        #expect(ConnectionState.tcp(.finWaitOrigin, flags: Self.syn, fromOrigin: false) == nil)
        #expect(ConnectionState.tcp(.lastAck, flags: Self.syn, fromOrigin: true) == nil)
        #expect(ConnectionState.tcp(.timeWait, flags: Self.syn | Self.ack, fromOrigin: false) == nil)
        // A segment without ACK in the middle of the handshake.
        #expect(ConnectionState.tcp(.synReceived, flags: 0, fromOrigin: true) == nil)
        // Nothing follows a reset but a new connection.
        #expect(ConnectionState.tcp(.closed, flags: Self.ack, fromOrigin: true) == nil)
        // Non-TCP states are not for the TCP machine.
        #expect(ConnectionState.tcp(.unreplied, flags: Self.ack, fromOrigin: true) == nil)
        #expect(ConnectionState.tcp(.replied, flags: Self.syn, fromOrigin: true) == nil)
    }

    @Test func reopenFromTimeWaitOrClosedOnlyWithAPlainSYN() {
        for state in ConnectionState.allCases {
            let expected = state == .timeWait || state == .closed
            #expect(ConnectionState.reopens(state, flags: Self.syn) == expected, "\(state)")
            #expect(!ConnectionState.reopens(state, flags: Self.syn | Self.ack), "\(state)")
            #expect(!ConnectionState.reopens(state, flags: Self.ack), "\(state)")
        }
        #expect(ConnectionState.reopens(.timeWait, flags: Self.syn | 0x40 | 0x80), "ECN bits on a SYN")
        // Late segments of the old connection keep the time-wait entry.
        #expect(ConnectionState.tcp(.timeWait, flags: Self.ack, fromOrigin: false) == .timeWait)
        #expect(ConnectionState.tcp(.timeWait, flags: Self.fin | Self.ack, fromOrigin: true) == .timeWait)
    }

    @Test func timeoutsPerState() {
        let tcp: UInt8 = 6
        #expect(ConnectionState.timeout(.synSent, ipProtocol: tcp) == 120)
        #expect(ConnectionState.timeout(.synReceived, ipProtocol: tcp) == 60)
        #expect(ConnectionState.timeout(.established, ipProtocol: tcp) == 432_000)
        #expect(ConnectionState.timeout(.finWaitOrigin, ipProtocol: tcp) == 120)
        #expect(ConnectionState.timeout(.finWaitReply, ipProtocol: tcp) == 120)
        #expect(ConnectionState.timeout(.lastAck, ipProtocol: tcp) == 30)
        #expect(ConnectionState.timeout(.timeWait, ipProtocol: tcp) == 120)
        #expect(ConnectionState.timeout(.closed, ipProtocol: tcp) == 10)
        #expect(ConnectionState.timeout(.unreplied, ipProtocol: 17) == 30)
        #expect(ConnectionState.timeout(.replied, ipProtocol: 17) == 120)
        #expect(ConnectionState.timeout(.unreplied, ipProtocol: 1) == 30)
        #expect(ConnectionState.timeout(.replied, ipProtocol: 1) == 30)
        #expect(ConnectionState.timeout(.unreplied, ipProtocol: 58) == 30)
        #expect(ConnectionState.timeout(.replied, ipProtocol: 58) == 30)
        #expect(ConnectionState.timeout(.unreplied, ipProtocol: 132) == 60)
        #expect(ConnectionState.timeout(.replied, ipProtocol: 132) == 432_000)
        #expect(ConnectionState.timeout(.unreplied, ipProtocol: 47) == 60)
        #expect(ConnectionState.timeout(.replied, ipProtocol: 47) == 600)
        // Every state has a timeout, and none is zero (an entry lives at least one second).
        for state in ConnectionState.allCases {
            for ipProtocol: UInt8 in [1, 6, 17, 47, 58, 132] {
                #expect(ConnectionState.timeout(state, ipProtocol: ipProtocol) > 0)
            }
        }
    }

    @Test func assuredStatesAndNames() {
        let assured = Set(ConnectionState.allCases.filter(\.isAssured))
        #expect(assured == [.replied, .established, .finWaitOrigin, .finWaitReply, .lastAck])
        #expect(ConnectionState.allCases.map(\.name).allSatisfy { !$0.isEmpty })
        #expect(ConnectionState.finWaitOrigin.name == ConnectionState.finWaitReply.name)
    }

    /// No sequence of segments, from either side, ever leaves the TCP states or reaches a
    /// non-TCP state; and an invalid segment is exactly what the walk reports as nil.
    @Test func randomSegmentsStayInTheTCPMachine() {
        var generator = SeededGenerator(seed: 11)
        let tcpStates: Set<ConnectionState> = [
            .synSent, .synReceived, .established, .finWaitOrigin, .finWaitReply, .lastAck, .timeWait, .closed,
        ]
        for _ in 0..<2000 {
            var state = ConnectionState.synSent
            for _ in 0..<20 {
                let flags = UInt8.random(in: 0...0x1F, using: &generator)
                let fromOrigin = Bool.random(using: &generator)
                if let next = ConnectionState.tcp(state, flags: flags, fromOrigin: fromOrigin) {
                    #expect(tcpStates.contains(next))
                    if flags & Self.rst != 0 { #expect(next == .closed) }
                    state = next
                }
            }
        }
    }
}
