import Testing

@testable import ButterflyControl

/// Who can reach an API endpoint, and what the daemon warns about at start.
@Suite struct APIEndpointTests {
    @Test(arguments: [
        ("tcp://127.0.0.1:9999", APIEndpoint.Reach.everyLocalUser),
        ("tcp://127.1.2.3:1", .everyLocalUser),
        ("tcp://localhost:9999", .everyLocalUser),
        ("tcp://[::1]:9999", .everyLocalUser),
        ("tcp://0.0.0.0:9999", .network),
        ("tcp://*:9999", .network),
        ("tcp://[::]:9999", .network),
        ("tcp://eth0:9999", .network),
        ("tcp://198.51.100.1:9999", .network),
        ("ws://127.0.0.1:80/api", .everyLocalUser),
        ("ipc:///run/butterfly/api.sock", .socketFile(path: "/run/butterfly/api.sock")),
        ("ipc://@butterfly", .everyLocalUser),
        ("inproc://api", .thisProcess),
        ("pgm://eth0;239.0.0.1:5555", .network),
    ])
    func reach(_ url: String, _ expected: APIEndpoint.Reach) {
        #expect(APIEndpoint(url).reach == expected)
    }

    @Test func warnings() {
        let loopback = APIEndpoint("tcp://127.0.0.1:9999")
        #expect(loopback.exposureWarnings(hasKey: false, socketMode: 0o600).first?.contains("every local user") == true)
        #expect(loopback.exposureWarnings(hasKey: true, socketMode: 0o600).isEmpty)
        let network = APIEndpoint("tcp://0.0.0.0:9999")
        #expect(network.exposureWarnings(hasKey: false, socketMode: 0o600).first?.contains("from the network") == true)
        #expect(network.exposureWarnings(hasKey: true, socketMode: 0o600).isEmpty)
        let socket = APIEndpoint("ipc:///run/butterfly/api.sock")
        #expect(socket.exposureWarnings(hasKey: false, socketMode: 0o660).isEmpty)
        #expect(socket.exposureWarnings(hasKey: false, socketMode: 0o666).count == 1)
        #expect(socket.exposureWarnings(hasKey: true, socketMode: 0o666).isEmpty)
        #expect(APIEndpoint("inproc://x").exposureWarnings(hasKey: false, socketMode: 0o666).isEmpty)
    }
}
