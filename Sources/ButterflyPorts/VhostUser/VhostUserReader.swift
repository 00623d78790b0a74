import CButterflyLinux

#if canImport(Glibc)
    import Glibc
#endif

/// Reassembles vhost-user messages from a non-blocking Unix stream socket, never blocking and
/// never reading past the message it is in (so descriptors, which travel with the first bytes
/// of their message, are never attributed to the wrong one). A front-end that stalls halfway
/// through a message costs nothing: the partial message waits here.
public final class VhostUserReader {
    private var buffer: [UInt8] = []
    private var descriptors: [Int32] = []
    private var scratch = [UInt8](repeating: 0, count: VhostUserMessage.headerSize + VhostUserMessage.maximumPayload)

    public init() {}

    deinit { for fd in descriptors { close(fd) } }

    public enum Result {
        /// Complete messages, in order (possibly none: the rest has not arrived yet).
        case messages([VhostUserMessage])
        /// The front-end closed the connection (after the messages already returned).
        case closed
    }

    /// Reads what the socket holds, up to `limit` complete messages (a flood waits for the
    /// next call instead of holding the control thread).
    public func read(from socket: Int32, limit: Int = 64) throws(VhostUserError) -> Result {
        var messages: [VhostUserMessage] = []
        while messages.count < limit {
            let wanted: Int
            if buffer.count < VhostUserMessage.headerSize {
                wanted = VhostUserMessage.headerSize - buffer.count
            } else {
                wanted = VhostUserMessage.headerSize + Int(VhostUserMessage.readU32(buffer, at: 8)) - buffer.count
            }
            var fds = [Int32](repeating: -1, count: Int(CBUTTERFLY_VHOST_MAX_FDS))
            var fdCount: Int32 = 0
            var truncated: Int32 = 0
            let count = scratch.withUnsafeMutableBytes { bytes in
                cbutterfly_recv_with_fds(socket, bytes.baseAddress, wanted, &fds, &fdCount, &truncated)
            }
            if count < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { return .messages(messages) }
                throw .io("vhost-user socket: \(String(cString: strerror(errno)))")
            }
            descriptors += fds.prefix(Int(fdCount))
            if count == 0 { return messages.isEmpty ? .closed : .messages(messages) }
            guard truncated == 0, descriptors.count <= Int(CBUTTERFLY_VHOST_MAX_FDS) else {
                throw .protocolViolation("more than \(CBUTTERFLY_VHOST_MAX_FDS) descriptors with one message")
            }
            buffer += scratch[0..<count]
            guard buffer.count >= VhostUserMessage.headerSize else { continue }
            let size = Int(VhostUserMessage.readU32(buffer, at: 8))
            guard size <= VhostUserMessage.maximumPayload else {
                throw .badSize(request: VhostUserMessage.readU32(buffer, at: 0), size: size)
            }
            guard buffer.count == VhostUserMessage.headerSize + size else { continue }
            messages.append(
                VhostUserMessage(
                    request: VhostUserMessage.readU32(buffer, at: 0),
                    flags: VhostUserMessage.readU32(buffer, at: 4),
                    payload: Array(buffer[VhostUserMessage.headerSize...]),
                    fds: descriptors
                )
            )
            buffer.removeAll(keepingCapacity: true)
            descriptors.removeAll(keepingCapacity: true)
        }
        return .messages(messages)
    }

    /// Sends a message (a reply, or a front-end's request in tests) with its descriptors.
    public static func send(_ message: VhostUserMessage, to socket: Int32) throws(VhostUserError) {
        let bytes = message.encoded
        let sent = bytes.withUnsafeBytes { raw in
            message.fds.withUnsafeBufferPointer { fds in
                cbutterfly_send_with_fds(socket, raw.baseAddress, raw.count, fds.baseAddress, Int32(fds.count))
            }
        }
        guard sent == bytes.count else {
            throw .io(
                "vhost-user socket: cannot send \(bytes.count) bytes: \(sent < 0 ? String(cString: strerror(errno)) : "short write")"
            )
        }
    }
}
