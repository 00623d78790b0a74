import Foundation
import Testing

/// A real virtual machine: QEMU under TCG running the host's Debian cloud kernel and a small
/// busybox initramfs, its virtio-net NIC attached by vhost-user (TESTBED.md). What the guest
/// does is a script chosen on the kernel command line; it reports on the serial console,
/// which goes to a file the test reads while the guest runs.
///
/// The scripts (`bf.do=`: ping, pong, listen, send, idle) and their console markers are
/// described in tests/guest/init.
final class QemuGuest {
    let process: ChildProcess
    let console: String
    private let directory = TemporaryDirectory()

    /// Starts a guest whose NIC `mac` connects to the vhost-user socket `path` (`server`: QEMU
    /// listens there, the daemon's NIC is then VHOST_USER_CLIENT).
    /// `mtu`: the MTU QEMU gives the guest (`host_mtu`), which must fit what the daemon
    /// carries (over VXLAN: the underlay's MTU less 50).
    init(
        path: String,
        mac: String,
        ip: String,
        peer: String,
        script: String,
        extra: String = "",
        server: Bool = false,
        mtu: Int? = nil
    ) throws {
        try requireTool("qemu-system-x86_64")
        let (kernel, initrd) = try Self.bootFiles()
        console = directory.path + "/console.log"
        let chardev = "socket,id=c0,path=\(path)" + (server ? ",server=on,wait=off" : ",reconnect=1")
        let arguments = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "1",
            "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-machine", "q35,memory-backend=mem",
            "-chardev", chardev, "-netdev", "vhost-user,id=n0,chardev=c0",
            // vectors=0: QEMU 7.2 under TCG crashes starting vhost-user with MSI-X (TESTBED.md).
            "-device", "virtio-net-pci,netdev=n0,mac=\(mac),vectors=0" + (mtu.map { ",host_mtu=\($0)" } ?? ""),
            "-nographic", "-nodefaults", "-serial", "file:\(console)", "-kernel", kernel, "-initrd", initrd,
            "-append", "console=ttyS0 quiet panic=-1 bf.ip=\(ip) bf.peer=\(peer) bf.do=\(script) \(extra)",
        ]
        process = try ChildProcess("/usr/bin/env", arguments)
    }

    deinit {
        if process.isRunning {
            kill(process.pid, SIGKILL)
            process.wait(timeout: 10)
        }
    }

    var output: String { (try? String(contentsOfFile: console, encoding: .utf8)) ?? "" }

    /// Occurrences of `marker` on the console so far.
    func count(_ marker: String) -> Int { output.components(separatedBy: marker).count - 1 }

    /// Waits until the console shows `marker` `times` times (or the guest exits).
    func waitFor(_ marker: String, times: Int = 1, timeout: TimeInterval) -> Bool {
        waitUntil(timeout: timeout) {
            count(marker) >= times || !process.isRunning
        } && count(marker) >= times
    }

    func waitForExit(timeout: TimeInterval) -> Int32 { process.wait(timeout: timeout) }

    // MARK: Boot files

    nonisolated(unsafe) private static var cached: (kernel: String, initrd: String)?
    private static let lock = NSLock()

    /// The newest installed cloud kernel and an initramfs built for it once per test run
    /// (tests/guest/build-initramfs, whose /init is tests/guest/init).
    static func bootFiles() throws -> (String, String) {
        lock.lock()
        defer { lock.unlock() }
        if let cached { return cached }
        let directory = NSTemporaryDirectory() + "butterfly-guest-\(getpid())"
        let build = try runProcess(repositoryRoot + "/tests/guest/build-initramfs", [directory])
        guard build.status == 0 else { throw HarnessError("cannot build the guest initramfs: \(build)") }
        cached = (build.stdout.trimmingCharacters(in: .whitespacesAndNewlines), directory + "/initrd.gz")
        return cached!
    }

    /// The repository, from this file's path (Tests/ButterflyIntegrationTests/QemuGuest.swift).
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
}
