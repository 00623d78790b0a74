/// The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.
public enum InternetChecksum {
    /// Adds `length` bytes at `pointer` to a running 32-bit sum (not yet folded).
    @inlinable
    public static func add(_ pointer: UnsafeMutableRawPointer, length: Int, to sum: UInt32 = 0) -> UInt32 {
        var total = UInt64(sum)
        var index = 0
        while index + 1 < length {
            total &+= UInt64(pointer.loadBigEndian16(at: index))
            index &+= 2
        }
        if index < length { total &+= UInt64(pointer.loadByte(at: index)) << 8 }
        while total >> 32 != 0 { total = (total & 0xFFFF_FFFF) &+ (total >> 32) }
        return UInt32(truncatingIfNeeded: total)
    }

    /// Folds a running sum into the 16-bit checksum field value.
    @inlinable
    public static func finish(_ sum: UInt32) -> UInt16 {
        var folded = sum
        while folded >> 16 != 0 { folded = (folded & 0xFFFF) &+ (folded >> 16) }
        return ~UInt16(truncatingIfNeeded: folded)
    }

    @inlinable
    public static func compute(_ pointer: UnsafeMutableRawPointer, length: Int) -> UInt16 {
        finish(add(pointer, length: length))
    }
}
