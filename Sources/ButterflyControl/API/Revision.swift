/// API revisions. Revision 6 is the original Butterfly's last schema; 7 adds only optional
/// fields and enum values (marked `[ours]` in the .proto files), so every revision-6 client
/// and request works unchanged.
public enum ButterflyRevision {
    public static let current: UInt32 = 7
}
