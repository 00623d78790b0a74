import Foundation
import Testing

/// A real virtual machine: QEMU under TCG running the host's Debian cloud kernel and a small
/// busybox initramfs, its virtio-net NIC attached by vhost-user (TESTBED.md). What the guest
/// does is a script chosen on the kernel command line; it reports on the serial console,
/// which goes to a file the test reads while the guest runs.
///
/// Scripts (`bf.do=`):
/// - `ping`: pings `bf.peer` until it answers (at most 60 s), prints `BF-PING-OK`, then either
///   powers off, reboots (`bf.then=reboot`: every boot does the same, for reconnect tests) or
///   stays up (`bf.then=stay`).
/// - `pong`: pings `bf.peer` twice a second forever, printing `BF-PONG` for each reply.
/// - `listen`: receives one TCP connection on port 7000, prints `BF-TCP-RECEIVED <bytes>`.
/// - `send`: pings `bf.peer` until it answers (`BF-PING-OK`), then sends `bf.bytes` zero bytes
///   to its port 7000 (retrying until it connects), prints `BF-TCP-SENT`.
/// - `idle`: configures the NIC and waits.
/// Every script first prints `BF-READY` once the NIC is up.
final class QemuGuest {
    let process: ChildProcess
    let console: String
    private let directory = TemporaryDirectory()

    /// Starts a guest whose NIC `mac` connects to the vhost-user socket `path` (`server`: QEMU
    /// listens there, the daemon's NIC is then VHOST_USER_CLIENT).
    init(path: String, mac: String, ip: String, peer: String, script: String, extra: String = "", server: Bool = false)
        throws
    {
        try requireTool("qemu-system-x86_64")
        let (kernel, initrd) = try Self.bootFiles()
        console = directory.path + "/console.log"
        let chardev = "socket,id=c0,path=\(path)" + (server ? ",server=on,wait=off" : ",reconnect=1")
        let arguments = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "1",
            "-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-machine", "q35,memory-backend=mem",
            "-chardev", chardev, "-netdev", "vhost-user,id=n0,chardev=c0",
            // vectors=0: QEMU 7.2 under TCG crashes starting vhost-user with MSI-X (TESTBED.md).
            "-device", "virtio-net-pci,netdev=n0,mac=\(mac),vectors=0",
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

    /// The newest installed cloud kernel and an initramfs built for it once per test run.
    static func bootFiles() throws -> (String, String) {
        lock.lock()
        defer { lock.unlock() }
        if let cached { return cached }
        try requireTool("cpio")
        let modules = "/lib/modules"
        guard
            let version = try FileManager.default.contentsOfDirectory(atPath: modules)
                .filter({ FileManager.default.fileExists(atPath: "/boot/vmlinuz-\($0)") })
                .sorted().last
        else { throw HarnessError("no kernel in /boot with modules (scripts/setup installs linux-image-cloud-amd64)") }
        let root = NSTemporaryDirectory() + "butterfly-guest-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        for directory in ["bin", "lib/modules", "proc", "sys", "dev", "tmp"] {
            try FileManager.default.createDirectory(
                atPath: root + "/tree/" + directory,
                withIntermediateDirectories: true
            )
        }
        guard FileManager.default.isExecutableFile(atPath: "/bin/busybox") else {
            throw HarnessError("/bin/busybox is missing (scripts/setup installs busybox-static)")
        }
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: root + "/tree/bin/busybox")
        var loads: [String] = []
        for module in [
            "drivers/virtio/virtio_ring", "drivers/virtio/virtio", "drivers/virtio/virtio_pci_modern_dev",
            "drivers/virtio/virtio_pci_legacy_dev", "drivers/virtio/virtio_pci", "net/core/failover",
            "drivers/net/net_failover", "drivers/net/virtio_net",
        ] {
            let name = (module as NSString).lastPathComponent + ".ko"
            let source = "\(modules)/\(version)/kernel/\(module).ko"
            guard FileManager.default.fileExists(atPath: source) else {
                throw HarnessError("kernel module \(source) is missing")
            }
            try FileManager.default.copyItem(atPath: source, toPath: root + "/tree/lib/modules/" + name)
            loads.append("insmod /lib/modules/\(name)")
        }
        try Self.initScript(loads: loads).write(toFile: root + "/tree/init", atomically: true, encoding: .utf8)
        chmod(root + "/tree/init", 0o755)
        let pack = try runProcess(
            "/bin/sh",
            ["-c", "cd \(root)/tree && find . | cpio -o -H newc --quiet | gzip -1 > \(root)/initrd.gz"]
        )
        guard pack.status == 0 else { throw HarnessError("cannot build the initramfs: \(pack)") }
        cached = ("/boot/vmlinuz-\(version)", root + "/initrd.gz")
        return cached!
    }

    private static func initScript(loads: [String]) -> String {
        """
        #!/bin/busybox sh
        /bin/busybox --install -s /bin
        mount -t proc proc /proc
        mount -t sysfs sys /sys
        mount -t devtmpfs dev /dev 2>/dev/null
        \(loads.joined(separator: "\n"))
        for word in $(cat /proc/cmdline); do
            case "$word" in bf.*=*) key=${word%%=*}; key=${key#bf.}; eval "bf_$key=\\"${word#*=}\\"";; esac
        done
        ip link set lo up
        ip link set eth0 up
        ip addr add "$bf_ip" dev eth0
        peer=${bf_peer%%/*}
        echo BF-READY
        case "$bf_do" in
        ping)
            n=0
            until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
                n=$((n + 1)); [ $n -ge 60 ] && { echo BF-PING-FAIL; poweroff -f; }
            done
            echo BF-PING-OK
            [ "$bf_then" = reboot ] && reboot -f
            [ "$bf_then" = stay ] && while true; do sleep 60; done
            poweroff -f;;
        pong)
            while true; do
                ping -c 1 -W 1 "$peer" >/dev/null 2>&1 && echo BF-PONG
                sleep 0.5
            done;;
        listen)
            bytes=$(nc -l -p 7000 | wc -c)
            echo "BF-TCP-RECEIVED $bytes"
            sleep 1
            poweroff -f;;
        send)
            n=0
            until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
                n=$((n + 1)); [ $n -ge 60 ] && { echo BF-PING-FAIL; poweroff -f; }
            done
            echo BF-PING-OK
            n=0
            until dd if=/dev/zero bs=1024 count=$((bf_bytes / 1024)) 2>/dev/null | nc -w 5 "$peer" 7000; do
                n=$((n + 1)); [ $n -ge 60 ] && { echo BF-TCP-FAIL; poweroff -f; }
                sleep 1
            done
            echo BF-TCP-SENT
            sleep 1
            poweroff -f;;
        *)
            while true; do sleep 60; done;;
        esac
        """
    }
}
