import ButterflyPacket

#if canImport(Glibc)
    import Glibc
#endif

/// The scatter list for writing a merged super-frame with one `writev`/`sendmsg`, as both the
/// tap (TCP) and the underlay (UDP) build it: the virtio-net header, the first member's whole
/// frame (its headers already patched by the coalescer), then each other member's payload —
/// its bytes after the `headerLength` it shares with the first. `vectors` must hold
/// `members + 1` entries. Returns how many it filled.
func fillSuperFrameVectors(
    _ vectors: UnsafeMutablePointer<iovec>,
    header: UnsafeMutableRawPointer,
    batch: PacketBatch,
    from first: Int,
    members: Int,
    headerLength: Int,
    pool: PacketPool
) -> Int {
    let head = batch[first]
    vectors[0] = iovec(iov_base: header, iov_len: VirtioNetHeader.size)
    vectors[1] = iovec(iov_base: pool.data(head), iov_len: Int(head.length))
    for member in 1..<members {
        let packet = batch[first &+ member]
        vectors[member &+ 1] = iovec(
            iov_base: pool.data(packet) + headerLength,
            iov_len: Int(packet.length) &- headerLength
        )
    }
    return members &+ 1
}
