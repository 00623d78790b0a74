import CButterflyLinux
import Foundation
import Testing

/// Runs the real `butterflyd` and `butterfly` binaries of this build, each test in its own
/// temporary directory with an `ipc://` endpoint, so tests never collide and never leave the
/// machine. Every daemon is stopped by its own pid when the test ends.
enum Binaries {
    /// The build's products directory: `BUTTERFLY_BIN_DIR`, else the test bundle's directory
    /// (SwiftPM puts the test bundle beside the executables).
    static let directory: String = {
        if let directory = ProcessInfo.processInfo.environment["BUTTERFLY_BIN_DIR"] { return directory }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("butterflyd").path) {
                return url.path
            }
        }
        return FileManager.default.currentDirectoryPath + "/.build/debug"
    }()

    static var daemon: String { directory + "/butterflyd" }
    static var cli: String { directory + "/butterfly" }
}

/// What a finished process printed and returned.
struct ProcessResult: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    var description: String { "status \(status)\n--- stdout\n\(stdout)--- stderr\n\(stderr)" }
}

/// A child process started with `posix_spawn`, its stdout and stderr drained by reader threads.
/// (Foundation's `Process` notices exits up to a second late on Linux, which made every test slow.)
// Safe: the output buffers are written by one reader thread each and read after it finished.
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    // One buffer per stream: each reader thread writes only its own.
    private var stdoutData = Data()
    private var stderrData = Data()
    private let readers = DispatchGroup()
    private var exitStatus: Int32?

    init(_ path: String, _ arguments: [String], captureStdout: Bool = true) throws {
        var pipes: [[Int32]] = [[-1, -1], [-1, -1]]
        // Close-on-exec: no other child may inherit these pipes (a long-lived daemon holding a
        // write end would keep another process's output from ever ending).
        for index in 0..<2 {
            guard cbutterfly_pipe_cloexec(&pipes[index]) == 0 else { throw HarnessError("pipe failed") }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipes[0][1], 1)
        posix_spawn_file_actions_adddup2(&actions, pipes[1][1], 2)
        for index in 0..<2 {
            posix_spawn_file_actions_addclose(&actions, pipes[index][0])
            posix_spawn_file_actions_addclose(&actions, pipes[index][1])
        }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        // A child starts with no signal blocked and SIGINT/SIGTERM at their defaults, whatever
        // the test runner's threads have (testpmd ignored the SIGINT that stops it otherwise).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGINT)
        sigaddset(&defaults, SIGTERM)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var child: pid_t = 0
        let result = posix_spawn(&child, path, &actions, &attributes, argv, environ)
        close(pipes[0][1])
        close(pipes[1][1])
        guard result == 0 else {
            close(pipes[0][0])
            close(pipes[1][0])
            throw HarnessError("cannot start \(path): \(String(cString: strerror(result)))")
        }
        pid = child
        for index in 0..<2 {
            let fd = pipes[index][0]
            readers.enter()
            Thread.detachNewThread {
                var data = Data()
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let count = read(fd, &buffer, buffer.count)
                    if count < 0 && errno == EINTR { continue }
                    if count <= 0 { break }
                    data.append(contentsOf: buffer[0..<count])
                }
                close(fd)
                if index == 0 { self.stdoutData = data } else { self.stderrData = data }
                self.readers.leave()
            }
        }
    }

    var isRunning: Bool {
        guard exitStatus == nil else { return false }
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return true }
        exitStatus = Self.decode(status)
        return false
    }

    /// Waits for the exit (killing the process after `timeout`) and returns its status.
    @discardableResult
    func wait(timeout: TimeInterval) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning {
            if Date() > deadline {
                kill(pid, SIGKILL)
                Issue.record("process \(pid) did not finish within \(timeout) s")
                var status: Int32 = 0
                waitpid(pid, &status, 0)
                exitStatus = Self.decode(status)
                break
            }
            usleep(2_000)
        }
        return exitStatus ?? -1
    }

    /// Output so far is only complete after the process exited.
    var stdout: String {
        waitForReaders()
        return String(decoding: stdoutData, as: UTF8.self)
    }

    var stderr: String {
        waitForReaders()
        return String(decoding: stderrData, as: UTF8.self)
    }

    /// Output ends when every holder of the pipe's write end is gone; a grandchild that
    /// outlives the process must not hang the test.
    private func waitForReaders() {
        if readers.wait(timeout: .now() + 10) == .timedOut {
            Issue.record("output of process \(pid) still open 10 s after it ended (a child process holds it)")
        }
    }

    private static func decode(_ status: Int32) -> Int32 {
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}

/// Runs a program to completion and captures its output.
func runProcess(_ path: String, _ arguments: [String], timeout: TimeInterval = 30) throws -> ProcessResult {
    let child = try ChildProcess(path, arguments)
    let status = child.wait(timeout: timeout)
    return ProcessResult(status: status, stdout: child.stdout, stderr: child.stderr)
}

/// A temporary directory removed when the value is released.
final class TemporaryDirectory {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "bt-test-\(getpid())-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// One running `butterflyd` with its own endpoint and socket directory.
final class Daemon {
    let directory: TemporaryDirectory
    let endpoint: String
    let child: ChildProcess

    /// Starts a daemon; inside network namespace `namespace` when given (a "host"). Its TAP
    /// NICs get the NIC's MAC (`--tap-set-mac`) unless `tapSetsMAC` is false: the tests move a
    /// tap into a namespace as the VM's own interface.
    init(
        extraArguments: [String] = [],
        directory: TemporaryDirectory = TemporaryDirectory(),
        namespace: String? = nil,
        tapSetsMAC: Bool = true
    ) throws {
        self.directory = directory
        endpoint = "ipc://\(directory.path)/api.sock"
        let arguments =
            ["--no-syslog", "-l", "info", "-e", endpoint, "-s", directory.path]
            + (tapSetsMAC ? ["--tap-set-mac"] : []) + extraArguments
        // A socket file left by a daemon killed in this directory would read as ready at once.
        unlink("\(directory.path)/api.sock")
        if let namespace {
            // `ip netns exec` execs the daemon: the child's pid is the daemon's.
            child = try ChildProcess("/usr/sbin/ip", ["netns", "exec", namespace, Binaries.daemon] + arguments)
        } else {
            child = try ChildProcess(Binaries.daemon, arguments)
        }
        // Ready once libzmq has created the socket file (bind happens after state restore).
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: "\(directory.path)/api.sock") {
            guard child.isRunning, Date() < deadline else {
                throw HarnessError("butterflyd did not start: \(child.isRunning ? "timeout" : child.stderr)")
            }
            usleep(2_000)
        }
    }

    var isRunning: Bool { child.isRunning }

    /// Runs `butterfly ARGS -e <this daemon>`.
    func cli(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(Binaries.cli, arguments + ["-e", endpoint])
    }

    func cli(_ line: String) throws -> ProcessResult {
        try cli(line.split(separator: " ").map(String.init))
    }

    /// Sends SIGTERM and waits; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        if child.isRunning { kill(child.pid, SIGTERM) }
        return waitForExit()
    }

    @discardableResult
    func waitForExit(timeout: TimeInterval = 10) -> Int32 {
        child.wait(timeout: timeout)
    }

    /// Everything the daemon wrote to stderr; waits for the daemon to exit.
    var stderr: String { child.stderr }

    deinit {
        if child.isRunning {
            kill(child.pid, SIGKILL)
            child.wait(timeout: 10)
        }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
