import Testing

@testable import ButterflyCLI

/// Global options are found anywhere in a segment; `--ip -e` stays an empty IP.
struct SegmentTests {
    @Test func globalOptionsAreTakenFromAnywhere() throws {
        var options = GlobalOptions()
        let segment = try Segment(
            ["nic", "-v", "list", "-e", "ipc:///tmp/x", "-t", "250", "-k", "/tmp/key"],
            options: &options
        )
        #expect(segment.words == ["nic", "list"])
        #expect(options.verbose)
        #expect(options.endpoint == "ipc:///tmp/x")
        #expect(options.timeout == 250)
        #expect(options.keyPath == "/tmp/key")
    }

    @Test func ipDashEMeansNoIP() throws {
        var options = GlobalOptions()
        let segment = try Segment(["nic", "update", "--id", "n", "--ip", "-e"], options: &options)
        #expect(segment.words == ["nic", "update", "--id", "n", "--ip", ""])
        #expect(options.endpoint == nil)  // not an endpoint option
    }

    @Test func zeroTimeoutWaitsForever() throws {
        var options = GlobalOptions()
        _ = try Segment(["status", "-t", "0"], options: &options)
        #expect(options.timeout == nil)
    }

    @Test(arguments: [["-e"], ["-t"], ["-t", "soon"], ["-k"]])
    func missingOrBadValues(_ tokens: [String]) {
        var options = GlobalOptions()
        #expect(throws: CLIError.self) { try Segment(tokens, options: &options) }
    }

    /// A key that cannot be read stops the CLI before it sends anything: never in clear.
    @Test(arguments: ["/nonexistent/butterfly.key", "/"])
    func unreadableKeyIsAnError(path: String) {
        var options = GlobalOptions()
        options.keyPath = path
        let error = #expect(throws: CLIError.self) { try options.client() }
        #expect(error?.message.hasPrefix("cannot load encryption key: cannot read encryption key file \(path)") == true)
    }

    @Test func flags() throws {
        var options = GlobalOptions()
        let segment = try Segment(["-V", "--help"], options: &options)
        #expect(segment.words.isEmpty && segment.version && segment.help)
    }
}
