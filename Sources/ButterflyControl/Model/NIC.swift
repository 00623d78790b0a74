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

    /// Longest unix socket path: `sun_path` holds 108 bytes, the terminating NUL included
    /// (unix(7)).
    public static let maxSocketPathLength = 107

    /// Checks what every NIC must satisfy, whatever the request that produced it.
    func validate() throws(APIError) {
        try Self.validateID(id)
        guard vni <= Self.maxVNI else { throw .badNIC("vni \(vni) does not fit in 24 bits") }
        if let problem = Self.problem(ofMAC: mac) {
            throw .badNIC("mac \(mac) \(problem); a NIC's mac must be a unicast address")
        }
        for ip in ips {
            if let problem = Self.problem(ofAddress: ip) {
                throw .badNIC("ip \(ip) \(problem); a NIC's ip must be a unicast address")
            }
        }
        for group in securityGroups {
            if let problem = Model.problem(ofSecurityGroupID: group) {
                throw .badNIC("security group id \(group.debugDescription) \(problem)")
            }
        }
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
        if kind == .bench { try validateBench() }
    }

    /// The two kinds of BENCH NIC (`btype`): a prober sending echo requests to `dip`/`dmac`,
    /// and a responder answering them (the default when `btype` is absent).
    public static let benchProber = "ICMP_SND_LIKE"
    public static let benchResponder = "ICMP_RCV_LIKE"

    private func validateBench() throws(APIError) {
        let btype = bench?.btype ?? Self.benchResponder
        guard btype == Self.benchProber || btype == Self.benchResponder else {
            throw .badNIC("btype '\(btype)' is not \(Self.benchProber) or \(Self.benchResponder)")
        }
        guard btype == Self.benchProber else { return }
        guard case .v4? = bench?.destinationIP, bench?.destinationMAC != nil else {
            throw .badNIC("a \(Self.benchProber) BENCH NIC needs dip (an IPv4 address) and dmac")
        }
    }

    /// Checks what depends on the host: `path` is where the NIC's port lives
    /// (`Reconciler.path(for:)`). A vhost-user socket `<socket-dir>/qemu-vhost-<id>` must fit
    /// in a socket address, or binding (server) and connecting (client) would fail later, out
    /// of the request's sight.
    func validate(path: String) throws(APIError) {
        switch kind {
        case .vhostUserServer, .vhostUserClient:
            let length = path.utf8.count
            guard length > Self.maxSocketPathLength else { return }
            // The path ends with the id (Reconciler.path(for:)): what is left is the directory's share.
            let longestID = max(Self.maxSocketPathLength - (length - id.utf8.count), 0)
            throw .badNIC(
                "the vhost-user socket path would be \(length) bytes, more than the \(Self.maxSocketPathLength) "
                    + "a unix socket address holds: with this socket directory a vhost-user NIC id has at most "
                    + "\(longestID) bytes"
            )
        case .tap, .bench:
            // A tap is named after its id, whose length `validate()` bounds; a bench NIC has no port.
            return
        }
    }

    /// Why `mac` cannot be a NIC's own address, or `nil` when it can. It is the source of
    /// every frame the NIC sends (anti-spoofing enforces it) and the key the switch learns the
    /// NIC under: a group address there would make the switch flood the NIC's traffic.
    static func problem(ofMAC mac: MACAddress) -> String? {
        if mac.isZero { return "is all zeros" }
        if mac.isBroadcast { return "is the broadcast address" }
        if mac.isMulticast { return "is a multicast address (group bit set)" }
        return nil
    }

    /// Why `ip` cannot be one of a NIC's addresses, or `nil` when it can. A NIC's addresses
    /// are the sources its outbound filter lets out, the senders ARP anti-spoofing accepts and
    /// the members of its groups' rules: none of that makes sense for an address no host owns.
    /// Loopback addresses are refused too: a guest's packets with such a source are martians
    /// everywhere else (RFC 1122 §3.2.1.3, RFC 4291 §2.5.3).
    static func problem(ofAddress ip: IPAddress) -> String? {
        if ip.isUnspecified { return "is the unspecified address" }
        if ip.isLimitedBroadcast { return "is the broadcast address" }
        if ip.isMulticast { return "is a multicast address" }
        if ip.isLoopback { return "is a loopback address" }
        return nil
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
