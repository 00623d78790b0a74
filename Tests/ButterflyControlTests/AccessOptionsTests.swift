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
