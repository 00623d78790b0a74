import ButterflyPorts
import CButterflyLinux
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The vhost-user control socket in both modes, with real Unix sockets in a private directory.
@Suite struct VhostUserEndpointTests {
    static func directory() -> String {
        var template = Array("/tmp/bt-vhost-endpoint-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        return path
    }

    static func remove(_ directory: String) {
        if let entries = opendir(directory) {
            while let entry = readdir(entries) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) {
                    String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { unlink(directory + "/" + name) }
            }
            closedir(entries)
        }
        rmdir(directory)
    }

    @Test func serverListensPrivatelyServesOneFrontEndAtATimeAndAcceptsTheNext() throws {
        let directory = Self.directory()
        defer { Self.remove(directory) }
        let path = directory + "/qemu-vhost-vm1"
        var endpoint: VhostUserEndpoint? = try VhostUserEndpoint(path: path, mode: .server)
        var status = stat()
        #expect(lstat(path, &status) == 0)
        #expect(status.st_mode & 0o777 == 0o600)
        #expect(endpoint!.connection < 0)

        let first = cbutterfly_unix_connect(path)
        #expect(first >= 0)
        #expect(endpoint!.service(now: 0))
        #expect(endpoint!.connection >= 0)
        // A second front-end while the first is connected is turned away.
        let second = cbutterfly_unix_connect(path)
        #expect(!endpoint!.service(now: 0))
        var byte: UInt8 = 0
        usleep(10_000)
        #expect(recv(second, &byte, 1, Int32(MSG_DONTWAIT)) == 0, "closed by the endpoint")
        close(second)
        // The VM goes away and comes back.
        close(first)
        endpoint!.disconnect(now: 0)
        let third = cbutterfly_unix_connect(path)
        #expect(endpoint!.service(now: 0))
        close(third)
        endpoint = nil
        #expect(lstat(path, &status) != 0, "the socket file goes with the NIC")
    }

    @Test func aStaleSocketIsReplacedButNotALiveOneNorAFile() throws {
        let directory = Self.directory()
        defer { Self.remove(directory) }
        let path = directory + "/qemu-vhost-vm1"
        // Stale: bound, then its process (here: its fd) gone.
        let stale = cbutterfly_unix_listen(path, 0o600)
        close(stale)
        let endpoint = try VhostUserEndpoint(path: path, mode: .server)
        // Live: refused.
        #expect(throws: VhostUserEndpoint.Failure.self) { try VhostUserEndpoint(path: path, mode: .server) }
        _ = endpoint
        // A regular file is never removed.
        let file = directory + "/qemu-vhost-vm2"
        let fd = open(file, O_CREAT | O_WRONLY, 0o600)
        close(fd)
        #expect(throws: VhostUserEndpoint.Failure.pathTaken("\(file) exists and is not a socket")) {
            try VhostUserEndpoint(path: file, mode: .server)
        }
        var status = stat()
        #expect(lstat(file, &status) == 0 && status.st_mode & S_IFMT == S_IFREG)
    }

    @Test func clientConnectsWhenTheFrontEndListensAndBacksOffMeanwhile() throws {
        let directory = Self.directory()
        defer { Self.remove(directory) }
        let path = directory + "/qemu-vhost-vm1"
        let endpoint = try VhostUserEndpoint(path: path, mode: .client)
        #expect(endpoint.pollDescriptor < 0)
        // Nobody listens: attempts back off 0.1, 0.2, 0.4 … up to 5 s.
        var now = 0.0
        var gaps: [Double] = []
        for _ in 0..<8 {
            #expect(!endpoint.service(now: now))
            gaps.append(endpoint.nextAttempt - now)
            #expect(!endpoint.service(now: now + 0.01), "not before the next attempt is due")
            now = endpoint.nextAttempt
        }
        #expect(gaps.map { ($0 * 1000).rounded() } == [100, 200, 400, 800, 1600, 3200, 5000, 5000])
        // QEMU starts listening (server=on): the next due attempt connects.
        let listener = cbutterfly_unix_listen(path, 0o600)
        defer { close(listener) }
        #expect(endpoint.service(now: now))
        #expect(endpoint.connection >= 0)
        let accepted = accept(listener, nil, nil)
        #expect(accepted >= 0)
        // Lost: reconnects quickly (backoff reset by the success).
        close(accepted)
        endpoint.disconnect(now: now)
        #expect(((endpoint.nextAttempt - now) * 1000).rounded() == 100)
        #expect(endpoint.service(now: now + 0.1))
    }
}
