import ButterflyPacket

#if canImport(Glibc)
    import Glibc
#endif

// Super-frames at the ports' edge (docs/OFFLOADS.md): the scatter list a merged run is
// written with, and the cutting of a guest's super-frame into pool buffers.

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

/// Moves segments of a guest's pending TCP super-frame into `batch`, each in a buffer of the
/// class its length needs, until the super-frame is done or the batch or the pool runs out
/// (the rest waits for the next call: `pending` stays set); returns how many. Shared by the
/// ports that take super-frames from guests (tap, vhost-user).
func cutPendingSegments(_ pending: inout TCPSegmenter?, into batch: PacketBatch, pool: PacketPool) -> Int {
    guard var segmenter = pending else { return 0 }
    var made = 0
    let segmentFrame = segmenter.largestSegmentFrame
    while !segmenter.isFinished, !batch.isFull, var packet = pool.allocate(frameLength: segmentFrame) {
        packet.length = UInt16(segmenter.writeNext(to: pool.data(packet)))
        batch.append(packet)
        made &+= 1
    }
    pending = segmenter.isFinished ? nil : segmenter
    return made
}
