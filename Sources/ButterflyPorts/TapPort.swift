import ButterflyDataplane
import ButterflyPacket
import CButterflyLinux

#if canImport(Glibc)
    import Glibc
#endif

/// A TAP NIC: a kernel tap interface named after the NIC id (`IFF_TAP | IFF_NO_PI`), its
/// hardware address set to the NIC's MAC. The daemon holds the fd, so the interface keeps
/// working after it is moved into another network namespace (the VM side).
///
/// One `read`/`write` per frame: the tap character device has no batch call. Frames from the
/// guest are read straight into pool buffers (no copy beyond the kernel's).
public final class TapPort: PacketPort {
    public let name: String
    public let fileDescriptor: Int32
    public private(set) var portDrops = PortDropCounters()

    /// Frames the kernel queues for the daemon before dropping.
    public static let queueLength: Int32 = 10_000

    public struct Failure: Error, CustomStringConvertible {
        public let operation: String
        public let errno: Int32
        public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
    }

    /// Creates the tap `name` with hardware address `mac` and brings it up.
    public init(name: String, mac: MACAddress, mtu: Int?) throws(Failure) {
        self.name = name
        let fd = cbutterfly_tap_open(name)
        guard fd >= 0 else { throw Failure(operation: "cannot create tap \(name)", errno: errno) }
        fileDescriptor = fd
        var octets = mac.octets
        guard cbutterfly_interface_set_mac(name, &octets) == 0 else {
            let failure = Failure(operation: "cannot set the MAC address of tap \(name)", errno: errno)
            close(fd)
            throw failure
        }
        if let mtu, cbutterfly_interface_set_mtu(name, Int32(mtu)) != 0 {
            let failure = Failure(operation: "cannot set MTU \(mtu) on tap \(name)", errno: errno)
            close(fd)
            throw failure
        }
        // The guest's frames wait in this queue until the worker reads them (one read per
        // frame): a deeper queue absorbs bursts instead of dropping segments the guest's TCP
        // must then retransmit. Best effort: the default (1000) still works.
        _ = cbutterfly_interface_set_txqueuelen(name, Self.queueLength)
        _ = cbutterfly_interface_set_up(name, 1)
    }

    deinit { close(fileDescriptor) }

    /// Changes the interface's hardware address; best effort, since the interface may have
    /// moved to another network namespace where its name no longer resolves from here.
    public func setMAC(_ mac: MACAddress) {
        var octets = mac.octets
        _ = cbutterfly_interface_set_mac(name, &octets)
    }

    public func receive(into batch: PacketBatch, pool: PacketPool) -> Int {
        var received = 0
        while !batch.isFull {
            guard var packet = pool.allocate() else {
                // Leave the frames in the kernel queue; they are read when buffers return.
                break
            }
            // Safe: the buffer has `maximumFrame` bytes after the headroom.
            let count = read(fileDescriptor, pool.data(packet), PacketPool.maximumFrame)
            if count <= 0 {
                pool.release(packet)
                if count < 0 && errno == EINTR { continue }
                break  // EAGAIN: nothing more now (or the link is gone)
            }
            packet.length = UInt16(count)
            batch.append(packet)
            received &+= 1
        }
        return received
    }

    public func transmit(_ batch: PacketBatch, pool: PacketPool) -> Int {
        var sent = 0
        for index in 0..<batch.count {
            let packet = batch[index]
            var result: Int
            repeat {
                result = write(fileDescriptor, pool.data(packet), Int(packet.length))
            } while result < 0 && errno == EINTR
            if result == Int(packet.length) {
                sent &+= 1
            } else {
                // EAGAIN (guest not reading) or EIO (interface down): the frame is lost.
                portDrops.transmitDropped &+= 1
            }
        }
        batch.releaseAll(to: pool)
        return sent
    }
}
