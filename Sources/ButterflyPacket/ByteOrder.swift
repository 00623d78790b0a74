/// Unaligned big-endian (network order) loads and stores on raw packet bytes.
extension UnsafeMutableRawPointer {
    @inlinable
    public func loadBigEndian16(at offset: Int) -> UInt16 { UnsafeRawPointer(self).loadBigEndian16(at: offset) }

    @inlinable
    public func loadBigEndian32(at offset: Int) -> UInt32 { UnsafeRawPointer(self).loadBigEndian32(at: offset) }

    @inlinable
    public func storeBigEndian16(_ value: UInt16, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable
    public func storeBigEndian32(_ value: UInt32, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }

    @inlinable
    public func loadByte(at offset: Int) -> UInt8 { load(fromByteOffset: offset, as: UInt8.self) }

    @inlinable
    public func storeByte(_ value: UInt8, at offset: Int) {
        storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
    }

    /// A 48-bit MAC address at `offset`, as the low 48 bits of a UInt64 (first octet highest).
    @inlinable
    public func loadMAC(at offset: Int) -> UInt64 {
        UInt64(loadBigEndian16(at: offset)) << 32 | UInt64(loadBigEndian32(at: offset + 2))
    }

    @inlinable
    public func storeMAC(_ mac: UInt64, at offset: Int) {
        storeBigEndian16(UInt16(truncatingIfNeeded: mac >> 32), at: offset)
        storeBigEndian32(UInt32(truncatingIfNeeded: mac), at: offset + 2)
    }
}

/// Read-only views (headers compared or verified, never changed).
extension UnsafeRawPointer {
    @inlinable
    public func loadBigEndian16(at offset: Int) -> UInt16 {
        UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable
    public func loadBigEndian32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inlinable
    public func loadByte(at offset: Int) -> UInt8 { load(fromByteOffset: offset, as: UInt8.self) }
}
