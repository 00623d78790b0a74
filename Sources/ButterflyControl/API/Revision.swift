/// API revisions. Revision 6 is the original Butterfly's last schema; 7 to 9 add only optional
/// fields and enum values (marked `[ours]` in the .proto files), so every revision-6 client
/// and request works unchanged. 8: firewall connection counts and `nic_firewall`. 9: a BENCH
/// NIC's figures in `nic_stats`.
public enum ButterflyRevision {
    public static let current: UInt32 = 9
}
