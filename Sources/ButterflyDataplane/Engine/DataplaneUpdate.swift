import HashTreeCollections

/// A NIC's runtime side: its port and its counters. Created by the control plane (so that a
/// failure, say a tap that cannot be created, is the API caller's error), then owned by the
/// worker until the NIC is deleted.
public final class NICAttachment: @unchecked Sendable {
    // Safe: handed from the control plane to one worker through the mailbox; afterwards only
    // that worker calls the port. `counters` is safe to read from any thread.
    public let nicID: String
    public let port: any PacketPort
    public let counters = CounterBlock()

    public init(nicID: String, port: any PacketPort) {
        self.nicID = nicID
        self.port = port
    }
}

/// What the control plane publishes: the configuration and the attachments of its NICs.
/// Both are persistent maps, so publishing after one change costs O(log n).
public struct DataplaneUpdate: Sendable {
    public var config: DataplaneConfig
    /// By NIC id; a NIC without an attachment (e.g. a vhost-user NIC before its port exists)
    /// is configured but moves no packets.
    public var attachments: TreeDictionary<String, NICAttachment>
    /// The NICs whose configuration or attachment changed since the previous update; `nil`
    /// makes the worker compare every NIC (a first configuration, tests).
    public var changedNICs: [String]?

    public init(
        config: DataplaneConfig,
        attachments: TreeDictionary<String, NICAttachment>,
        changedNICs: [String]? = nil
    ) {
        self.config = config
        self.attachments = attachments
        self.changedNICs = changedNICs
    }
}
