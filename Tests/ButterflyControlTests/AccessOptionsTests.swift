import Foundation
import Testing

@testable import ButterflyControl

/// Daemon options of local access: the ipc socket's group and mode, the open-file limit.
@Suite struct AccessOptionsTests {
    @Test func defaults() throws {
        let options = try DaemonOptions.parse([])
        #expect(options.apiSocketGroup == nil && options.apiSocketMode == nil && options.openFilesLimit == nil)
    }

    @Test func commandLine() throws {
        let options = try DaemonOptions.parse([
            "--api-socket-group", "butterfly", "--api-socket-mode=0640", "--open-files-limit", "65536",
        ])
        #expect(options.apiSocketGroup == "butterfly")
        #expect(options.apiSocketMode == 0o640)
        #expect(options.openFilesLimit == 65536)
    }

    /// The packaged files, as shipped: the unit starts the daemon with `-c` on this ini, and
    /// every key of it (commented ones too, once enabled) must parse.
    @Test func thePackagedIniParsesAndItsCommentedKeysToo() throws {
        let dist = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../dist").standardized.path
        let shipped = try DaemonOptions.parse(["-c", dist + "/butterflyd.ini"])
        #expect(shipped.endpoint == "ipc:///run/butterfly/api.sock")
        #expect(shipped.apiSocketGroup == "butterfly")
        #expect(shipped.tracePath == "/var/log/butterfly")
        #expect(shipped.socketDirectory == "/run/butterfly")
        // Every commented `;key = value` line enabled at once.
        let text = try String(contentsOfFile: dist + "/butterflyd.ini", encoding: .utf8)
        let enabled = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasPrefix(";") && line.contains("=") && !line.hasPrefix("; ") ? String(line.dropFirst()) : String(line)
        }
        let path = NSTemporaryDirectory() + "enabled-\(UUID().uuidString).ini"
        try enabled.joined(separator: "\n").write(toFile: path, atomically: false, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let all = try DaemonOptions.parse(["-c", path])
        #expect(all.stateFile == "/var/lib/butterfly/state")
        let unit = try String(contentsOfFile: dist + "/butterflyd.service", encoding: .utf8)
        #expect(unit.contains("StateDirectory=butterfly"), "the state file's directory exists")
        #expect(unit.contains("ExecStart=/usr/bin/butterflyd -c /etc/butterfly/butterflyd.ini"))
        let cli = try String(contentsOfFile: dist + "/butterfly.conf", encoding: .utf8)
        #expect(cli.contains("endpoint = \(shipped.endpoint)"), "the CLI finds the packaged daemon")
    }

    @Test func iniFile() throws {
        let path = NSTemporaryDirectory() + "access-\(UUID().uuidString).ini"
        try "[general]\napi-socket-group = ops\napi-socket-mode = 660\nopen-files-limit = 4096\n".write(
            toFile: path,
            atomically: false,
            encoding: .utf8
        )
        defer { try? FileManager.default.removeItem(atPath: path) }
        let options = try DaemonOptions.parse(["-c", path, "--api-socket-mode", "600"])
        #expect(options.apiSocketGroup == "ops")
        #expect(options.apiSocketMode == 0o600)
        #expect(options.openFilesLimit == 4096)
    }

    @Test(arguments: [
        ["--api-socket-mode", "0668"], ["--api-socket-mode", "1777"], ["--api-socket-mode", "rw"],
        ["--api-socket-group", ""], ["--open-files-limit", "10"], ["--open-files-limit", "many"],
    ])
    func badValues(_ arguments: [String]) {
        #expect(throws: DaemonOptions.Failure.self) { try DaemonOptions.parse(arguments) }
    }
}
