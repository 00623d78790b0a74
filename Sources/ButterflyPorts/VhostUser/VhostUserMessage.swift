/// One vhost-user control message (vhost-user.rst, "Message Specification"): a 12-byte header
/// `request u32 ‖ flags u32 ‖ size u32` in native (little-endian) order, `size` bytes of
/// payload, and the file descriptors that came with it (SCM_RIGHTS).
///
/// Decoding checks every size against the request type: the front-end is not trusted.
public struct VhostUserMessage {
    public static let headerSize = 12
    /// Larger than any payload we accept (SET_MEM_TABLE with 8 regions is 264 bytes).
    public static let maximumPayload = 4096
    public static let version: UInt32 = 1
    public static let replyFlag: UInt32 = 1 << 2
    public static let needReplyFlag: UInt32 = 1 << 3

    public var request: UInt32
    public var flags: UInt32
    public var payload: [UInt8]
    /// Owned by the message until the session takes them (it closes what it does not keep).
    public var fds: [Int32]

    public init(request: UInt32, flags: UInt32 = VhostUserMessage.version, payload: [UInt8] = [], fds: [Int32] = []) {
        self.request = request
        self.flags = flags
        self.payload = payload
        self.fds = fds
    }

    public var needsReply: Bool { flags & Self.needReplyFlag != 0 }

    /// The header for `size` payload bytes.
    public static func header(request: UInt32, flags: UInt32, size: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(headerSize)
        for value in [request, flags, UInt32(size)] { bytes += littleEndianBytes(value) }
        return bytes
    }

    /// The whole message on the wire (without its fds).
    public var encoded: [UInt8] { Self.header(request: request, flags: flags, size: payload.count) + payload }

    /// A back-end reply to `request` carrying `payload`.
    public static func reply(to request: UInt32, payload: [UInt8]) -> VhostUserMessage {
        VhostUserMessage(request: request, flags: version | replyFlag, payload: payload)
    }

    // MARK: Payload fields

    /// The payload as one u64 (features, status, the REPLY_ACK answer, KICK/CALL/ERR index).
    public func u64() throws(VhostUserError) -> UInt64 {
        try expectSize(8)
        return Self.readU64(payload, at: 0)
    }

    /// `struct vhost_vring_state { unsigned int index; unsigned int num; }`.
    public func vringState() throws(VhostUserError) -> (index: UInt32, num: UInt32) {
        try expectSize(8)
        return (Self.readU32(payload, at: 0), Self.readU32(payload, at: 4))
    }

    /// `struct vhost_vring_addr`: index, flags, then the front-end's virtual addresses of the
    /// descriptor table, used ring, available ring, and the log.
    public struct VringAddress: Equatable, Sendable {
        public var index: UInt32
        public var flags: UInt32
        public var descriptors: UInt64
        public var used: UInt64
        public var available: UInt64
        public var log: UInt64
    }

    public func vringAddress() throws(VhostUserError) -> VringAddress {
        try expectSize(40)
        return VringAddress(
            index: Self.readU32(payload, at: 0),
            flags: Self.readU32(payload, at: 4),
            descriptors: Self.readU64(payload, at: 8),
            used: Self.readU64(payload, at: 16),
            available: Self.readU64(payload, at: 24),
            log: Self.readU64(payload, at: 32)
        )
    }

    /// `VhostUserMemory`: `nregions u32 ‖ padding u32 ‖ regions[nregions]`, each region
    /// `guest_phys_addr ‖ memory_size ‖ userspace_addr ‖ mmap_offset` (u64 each).
    public func memoryRegions() throws(VhostUserError) -> [GuestMemory.RegionDescription] {
        guard payload.count >= 8 else { throw .badSize(request: request, size: payload.count) }
        let count = Int(Self.readU32(payload, at: 0))
        guard count >= 1 && count <= GuestMemory.maximumRegions else {
            throw .protocolViolation("SET_MEM_TABLE with \(count) regions (1…\(GuestMemory.maximumRegions))")
        }
        // QEMU and DPDK send exactly the regions used; accept a full fixed-size table too.
        guard payload.count >= 8 + 32 * count && payload.count <= 8 + 32 * GuestMemory.maximumRegions else {
            throw .badSize(request: request, size: payload.count)
        }
        return (0..<count).map { index in
            let base = 8 + 32 * index
            return GuestMemory.RegionDescription(
                guestPhysical: Self.readU64(payload, at: base),
                size: Self.readU64(payload, at: base + 8),
                userAddress: Self.readU64(payload, at: base + 16),
                mmapOffset: Self.readU64(payload, at: base + 24)
            )
        }
    }

    private func expectSize(_ size: Int) throws(VhostUserError) {
        guard payload.count == size else { throw .badSize(request: request, size: payload.count) }
    }

    static func readU32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        var value: UInt32 = 0
        for index in 0..<4 { value |= UInt32(bytes[offset + index]) << (8 * index) }
        return value
    }

    static func readU64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        UInt64(readU32(bytes, at: offset)) | UInt64(readU32(bytes, at: offset + 4)) << 32
    }

    public static func littleEndianBytes(_ value: UInt32) -> [UInt8] {
        (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }
    public static func littleEndianBytes(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }
}

/// Request codes (vhost-user.rst, "Front-end message types"); only those we name.
public enum VhostUserRequest {
    public static let getFeatures: UInt32 = 1
    public static let setFeatures: UInt32 = 2
    public static let setOwner: UInt32 = 3
    public static let resetOwner: UInt32 = 4
    public static let setMemTable: UInt32 = 5
    public static let setLogBase: UInt32 = 6
    public static let setLogFD: UInt32 = 7
    public static let setVringNum: UInt32 = 8
    public static let setVringAddr: UInt32 = 9
    public static let setVringBase: UInt32 = 10
    public static let getVringBase: UInt32 = 11
    public static let setVringKick: UInt32 = 12
    public static let setVringCall: UInt32 = 13
    public static let setVringErr: UInt32 = 14
    public static let getProtocolFeatures: UInt32 = 15
    public static let setProtocolFeatures: UInt32 = 16
    public static let getQueueNum: UInt32 = 17
    public static let setVringEnable: UInt32 = 18
    public static let sendRARP: UInt32 = 19
    public static let netSetMTU: UInt32 = 20
    public static let getStatus: UInt32 = 40
    public static let setStatus: UInt32 = 39
}

/// Why a session was reset; each is counted and logged, and affects only its NIC.
public enum VhostUserError: Error, Equatable, CustomStringConvertible {
    case badSize(request: UInt32, size: Int)
    case badDescriptors(request: UInt32, expected: Int, got: Int)
    case unknownRequest(UInt32)
    case protocolViolation(String)
    case badMemory(String)
    case io(String)

    public var description: String {
        switch self {
        case .badSize(let request, let size): "request \(request) with a payload of \(size) bytes"
        case .badDescriptors(let request, let expected, let got):
            "request \(request) with \(got) file descriptors (expected \(expected))"
        case .unknownRequest(let request): "unknown or unnegotiated request \(request)"
        case .protocolViolation(let what): what
        case .badMemory(let what): "memory table: \(what)"
        case .io(let what): what
        }
    }
}
