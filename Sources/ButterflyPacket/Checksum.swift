/// The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.
public enum InternetChecksum {
    /// Adds `length` bytes at `pointer` to a running sum (not yet folded), as if the bytes were
    /// big-endian 16-bit words starting at an even offset (an odd last byte is the high byte
    /// of a final word).
    ///
    /// Eight bytes per step: the one's-complement sum is independent of byte order (RFC 1071
    /// §2(B)), so the words are added as little-endian 64-bit loads with end-around carry and
    /// the folded result is byte-swapped once. About four times faster than 16-bit steps, which
    /// matters because segmentation and coalescing checksum every TCP payload.
    @inlinable
    public static func add(_ pointer: UnsafeRawPointer, length: Int, to sum: UInt32 = 0) -> UInt32 {
        var accumulator: UInt64 = 0
        var index = 0
        while index &+ 8 <= length {
            let (total, carry) = accumulator.addingReportingOverflow(
                pointer.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            )
            accumulator = total &+ (carry ? 1 : 0)
            index &+= 8
        }
        // Fold to 32 bits before adding the tail, so the tail cannot overflow.
        accumulator = (accumulator & 0xFFFF_FFFF) &+ (accumulator >> 32)
        if index &+ 4 <= length {
            accumulator &+= UInt64(pointer.loadUnaligned(fromByteOffset: index, as: UInt32.self))
            index &+= 4
        }
        if index &+ 2 <= length {
            accumulator &+= UInt64(pointer.loadUnaligned(fromByteOffset: index, as: UInt16.self))
            index &+= 2
        }
        if index < length {
            // The high byte of a big-endian word is the low byte of a little-endian load.
            accumulator &+= UInt64(pointer.load(fromByteOffset: index, as: UInt8.self))
        }
        while accumulator >> 16 != 0 { accumulator = (accumulator & 0xFFFF) &+ (accumulator >> 16) }
        let bigEndian = UInt16(truncatingIfNeeded: accumulator).byteSwapped
        let total = UInt64(sum) &+ UInt64(bigEndian)
        return UInt32(truncatingIfNeeded: (total & 0xFFFF_FFFF) &+ (total >> 32))
    }

    /// Folds a running sum into the 16-bit checksum field value.
    @inlinable
    public static func finish(_ sum: UInt32) -> UInt16 {
        ~fold(sum)
    }

    /// Folds a running sum to 16 bits without complementing it: the value a partial checksum
    /// (`CHECKSUM_PARTIAL`, virtio `NEEDS_CSUM`) leaves in the field for the pseudo-header.
    @inlinable
    public static func fold(_ sum: UInt32) -> UInt16 {
        var folded = sum
        while folded >> 16 != 0 { folded = (folded & 0xFFFF) &+ (folded >> 16) }
        return UInt16(truncatingIfNeeded: folded)
    }

    @inlinable
    public static func compute(_ pointer: UnsafeRawPointer, length: Int) -> UInt16 {
        finish(add(pointer, length: length))
    }
}
