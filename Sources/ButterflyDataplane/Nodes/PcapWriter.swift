import ButterflyPacket

#if canImport(Glibc)
    import Glibc
#endif

/// Writes frames to a classic pcap file (tcpdump's format: magic 0xa1b2c3d4, version 2.4,
/// link type 1 = Ethernet), through a fixed buffer flushed at the end of each worker pass, so
/// tracing costs a copy per frame and one `write` per pass, never an allocation.
///
/// ```
///  file:   global header (24 B) ‖ record ‖ record …
///  record: ts_sec (4) ‖ ts_usec (4) ‖ captured length (4) ‖ original length (4) ‖ bytes
/// ```
public final class PcapWriter {
    public let path: String
    private let fd: Int32
    private let buffer: UnsafeMutableRawPointer
    private static let capacity = 1 << 18
    private var used = 0
    /// Records that could not be written (disk full…): tracing never stops traffic.
    public private(set) var failedWrites: UInt64 = 0

    /// Opens (truncates) `path` and writes the global header; `nil` when it cannot be opened
    /// safely (`openSafely`).
    public init?(path: String) {
        let fd = Self.openSafely(path)
        guard fd >= 0 else { return nil }
        self.path = path
        self.fd = fd
        buffer = .allocate(byteCount: Self.capacity, alignment: 16)
        // pcap global header, host byte order (readers detect it from the magic).
        buffer.storeBytes(of: UInt32(0xA1B2_C3D4), toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: UInt16(2), toByteOffset: 4, as: UInt16.self)
        buffer.storeBytes(of: UInt16(4), toByteOffset: 6, as: UInt16.self)
        buffer.storeBytes(of: Int32(0), toByteOffset: 8, as: Int32.self)
        buffer.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
        buffer.storeBytes(of: UInt32(65535), toByteOffset: 16, as: UInt32.self)
        buffer.storeBytes(of: UInt32(1), toByteOffset: 20, as: UInt32.self)
        used = 24
        flush()
    }

    /// Opens the capture file for writing, private (0600: captures are tenant traffic), as a
    /// root daemon may open a name in a directory others can write to (`/tmp`):
    /// - a new file is created with `O_EXCL`, so nothing planted is followed;
    /// - an existing one is opened with `O_NOFOLLOW` (a symbolic link fails) and `O_NONBLOCK`
    ///   (a FIFO fails instead of blocking the worker), and is used only when it is a regular
    ///   file of our own user with one link (not another user's file, nor a hard link to one
    ///   elsewhere); then truncated and made private.
    /// Symbolic links in the directory part are followed: it is the operator's trace directory.
    /// Returns the descriptor, or -1.
    static func openSafely(_ path: String) -> Int32 {
        let created = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if created >= 0 || errno != EEXIST { return created }
        let fd = open(path, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return -1 }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG, status.st_uid == geteuid(),
            status.st_nlink == 1, ftruncate(fd, 0) == 0, fchmod(fd, 0o600) == 0
        else {
            close(fd)
            return -1
        }
        return fd
    }

    deinit {
        flush()
        close(fd)
        buffer.deallocate()
    }

    /// Appends one frame, stamped with the current time.
    public func record(_ data: UnsafeMutableRawPointer, length: Int) {
        let needed = 16 + length
        if used + needed > Self.capacity { flush() }
        guard needed <= Self.capacity else { return }
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        buffer.storeBytes(of: UInt32(truncatingIfNeeded: time.tv_sec), toByteOffset: used, as: UInt32.self)
        buffer.storeBytes(of: UInt32(truncatingIfNeeded: time.tv_nsec / 1000), toByteOffset: used + 4, as: UInt32.self)
        buffer.storeBytes(of: UInt32(length), toByteOffset: used + 8, as: UInt32.self)
        buffer.storeBytes(of: UInt32(length), toByteOffset: used + 12, as: UInt32.self)
        (buffer + used + 16).copyMemory(from: data, byteCount: length)
        used += needed
    }

    /// Writes what is buffered.
    public func flush() {
        var offset = 0
        while offset < used {
            let written = write(fd, buffer + offset, used - offset)
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else {
                failedWrites &+= 1
                break
            }
            offset += written
        }
        used = 0
    }
}
