import ButterflyPacket

/// The underlay side plugged into the worker (VXLAN + ARP/ND + IGMP/MLD), `nil` in local mode.
public protocol UnderlayProcessing: AnyObject {
    /// Receives and processes one batch from the underlay; returns frames received.
    func poll(_ worker: Worker) -> Int
    /// Sends what is queued for the underlay.
    func flush(_ worker: Worker)
    /// Called after a new configuration was adopted (join/leave groups, peers).
    func adopt(_ worker: Worker)
    /// Copies the port's own drop counters into the worker's global counters (once a second).
    func publishPortCounters(_ worker: Worker)
    /// Sends a guest frame of `vni` to the network: to the VTEP that owns `destination`
    /// (a remote location ≤ -2), or flooded (BUM) when `location` is -1.
    func send(_ packet: Packet, vni: UInt32, location: Int32, worker: Worker)
}
