import Testing

@testable import ButterflyCLI

/// `-e` > `BUTTERFLY_ENDPOINT` > config file (`BUTTERFLY_CONFIG` or /etc/butterfly/butterfly.conf) > default.
@Suite struct EndpointDiscoveryTests {
    static func files(_ contents: [String: String]) -> EndpointDiscovery.FileReader {
        { (path: String) throws(CLIError) -> String? in contents[path] }
    }

    let packaged = files(["/etc/butterfly/butterfly.conf": "; packaged\nendpoint = ipc:///run/butterfly/api.sock\n"])

    @Test func precedence() throws {
        let environment = ["BUTTERFLY_ENDPOINT": "tcp://127.0.0.1:7000"]
        #expect(
            try EndpointDiscovery.endpoint(flag: "ipc:///x", environment: environment, readFile: packaged) == "ipc:///x"
        )
        #expect(
            try EndpointDiscovery.endpoint(flag: nil, environment: environment, readFile: packaged)
                == "tcp://127.0.0.1:7000"
        )
        #expect(
            try EndpointDiscovery.endpoint(flag: nil, environment: [:], readFile: packaged)
                == "ipc:///run/butterfly/api.sock"
        )
        #expect(
            try EndpointDiscovery.endpoint(flag: nil, environment: [:], readFile: Self.files([:]))
                == "tcp://127.0.0.1:9999"
        )
        // An empty variable counts as unset.
        #expect(
            try EndpointDiscovery.endpoint(flag: nil, environment: ["BUTTERFLY_ENDPOINT": ""], readFile: packaged)
                == "ipc:///run/butterfly/api.sock"
        )
    }

    @Test func configFileFromTheEnvironment() throws {
        let read = Self.files(["/home/op/b.conf": "endpoint = \"tcp://127.0.0.1:1234\""])
        #expect(
            try EndpointDiscovery.endpoint(
                flag: nil,
                environment: ["BUTTERFLY_CONFIG": "/home/op/b.conf"],
                readFile: read
            )
                == "tcp://127.0.0.1:1234"
        )
        // Named but missing: the default.
        #expect(
            try EndpointDiscovery.endpoint(flag: nil, environment: ["BUTTERFLY_CONFIG": "/nope"], readFile: read)
                == "tcp://127.0.0.1:9999"
        )
    }

    @Test(arguments: ["endpoint =\n", "colour = blue\n", "[other]\nendpoint = ipc:///x\n", "no equals sign\n"])
    func badConfigFilesAreErrors(_ text: String) {
        #expect(throws: CLIError.self) {
            try EndpointDiscovery.endpoint(
                flag: nil,
                environment: [:],
                readFile: Self.files([EndpointDiscovery.defaultConfigFile: text])
            )
        }
    }

    @Test func unreadableConfigFileIsAnError() {
        let failing: EndpointDiscovery.FileReader = { (path: String) throws(CLIError) -> String? in
            throw CLIError("cannot read configuration file \(path): Permission denied")
        }
        #expect(throws: CLIError.self) {
            try EndpointDiscovery.endpoint(flag: nil, environment: [:], readFile: failing)
        }
    }
}
