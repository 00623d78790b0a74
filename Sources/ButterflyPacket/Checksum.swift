/// The Internet checksum (RFC 1071): one's-complement sum of 16-bit big-endian words.
public enum InternetChecksum {
    /// Adds `length` bytes at `pointer` to a running sum (not yet folded), as if the bytes were
    /// big-endian 16-bit words starting at an even offset (an odd last byte is the high byte
    /// of a final word).
    ///
    /// The one's-complement sum is independent of byte order and word width (RFC 1071 §2(B),
    /// and 2^16 ≡ 1 mod 0xFFFF), so the bytes are summed as little-endian 32-bit words into a
    /// 64-bit accumulator — no carries to track, a plain reduction the compiler vectorizes —
    /// then folded and byte-swapped once. Segmentation and merging checksum every TCP payload,
    /// so this loop is the hottest user-space code under bulk TCP.
    @inlinable
    public static func add(_ pointer: UnsafeRawPointer, length: Int, to sum: UInt32 = 0) -> UInt32 {
        var accumulator: UInt64 = 0
        let words = length >> 2
        // Safe: `words * 4 <= length`. At most 2^32 additions of values below 2^32 cannot
        // overflow 64 bits (frames are far shorter than 16 GiB).
        for word in 0..<words {
            accumulator &+= UInt64(pointer.loadUnaligned(fromByteOffset: word &<< 2, as: UInt32.self))
        }
        var index = words &<< 2
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
