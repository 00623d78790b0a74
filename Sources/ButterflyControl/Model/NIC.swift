import ButterflyDataplane

/// A NIC as the user declared it (the desired state). The reconciler derives the data
/// plane's `NICConfig` from it and from the host's settings.
public struct NIC: Equatable, Sendable {
    public var id: String
    public var mac: MACAddress
    public var vni: UInt32
    /// Normalised, duplicates removed, in the order given.
    public var ips: [IPAddress]
    /// Ids of security groups; unknown ids are kept and ignored until the group exists.
    public var securityGroups: [String]
    public var ipAntiSpoof: Bool
    public var sniffTargetNICID: String?
    public var bypassFiltering: Bool
    public var kind: NICKind
    /// `nil`: follow the daemon's `--packet-trace` default.
    public var packetTrace: Bool?
    public var packetTracePath: String?
    public var bench: BenchParameters?

    /// Parameters of a BENCH NIC (an in-daemon probe generator / responder).
    public struct BenchParameters: Equatable, Sendable {
        public var btype: String?
        public var destinationIP: IPAddress?
        public var destinationMAC: MACAddress?

        public init(btype: String?, destinationIP: IPAddress?, destinationMAC: MACAddress?) {
            self.btype = btype
            self.destinationIP = destinationIP
            self.destinationMAC = destinationMAC
        }
    }

    public init(
        id: String,
        mac: MACAddress,
        vni: UInt32,
        ips: [IPAddress] = [],
        securityGroups: [String] = [],
        ipAntiSpoof: Bool = false,
        sniffTargetNICID: String? = nil,
        bypassFiltering: Bool = false,
        kind: NICKind = .vhostUserServer,
        packetTrace: Bool? = nil,
        packetTracePath: String? = nil,
        bench: BenchParameters? = nil
    ) {
        self.id = id
        self.mac = mac
        self.vni = vni
        self.ips = ips
        self.securityGroups = securityGroups
        self.ipAntiSpoof = ipAntiSpoof
        self.sniffTargetNICID = sniffTargetNICID
        self.bypassFiltering = bypassFiltering
        self.kind = kind
        self.packetTrace = packetTrace
        self.packetTracePath = packetTracePath
        self.bench = bench
    }

    /// Largest VNI: VXLAN carries 24 bits (RFC 7348 §5).
    public static let maxVNI: UInt32 = (1 << 24) - 1

    /// Longest tap interface name the kernel accepts (IFNAMSIZ − 1).
    public static let maxInterfaceNameLength = 15

    /// Checks what every NIC must satisfy, whatever the request that produced it.
    func validate() throws(APIError) {
        try Self.validateID(id)
        guard vni <= Self.maxVNI else { throw .badNIC("vni \(vni) does not fit in 24 bits") }
        if kind == .tap {
            guard id.utf8.count <= Self.maxInterfaceNameLength else {
                throw .badNIC(
                    "a TAP NIC is named after its id, which must be at most \(Self.maxInterfaceNameLength) bytes"
                )
            }
            guard !id.contains(where: { $0 == " " || $0 == ":" }) && id != "." && id != ".." else {
                throw .badNIC("a TAP NIC id must be a valid interface name")
            }
        }
        if let path = packetTracePath, path.isEmpty || path.contains("\0") {
            throw .badNIC("packet trace path must be a non-empty file path")
        }
    }

    /// NIC ids name files (vhost-user sockets, pcap traces) and interfaces, so they must not
    /// be able to escape a directory.
    static func validateID(_ id: String) throws(APIError) {
        guard !id.isEmpty else { throw .badNIC("id is empty") }
        guard id != "." && id != ".." else { throw .badNIC("id may not be '.' or '..'") }
        guard !id.unicodeScalars.contains(where: { $0 == "/" || $0.value < 0x20 || $0.value == 0x7F }) else {
            throw .badNIC("id may not contain '/' or control characters")
        }
    }
}
