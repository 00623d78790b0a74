import ButterflyControl
import ButterflyProtocol
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `butterfly`: the command-line client of the Butterfly API (BUTTERFLY-COMPAT.md §5).
///
/// ```
///  argv ─► split on standalone "+" ─► segments
///          global options (-e -v -t -k -V -h) are taken from every segment
///          each segment: command path (nic sg add …) ─► one API exchange ─► output
///          stop at the first failing segment; exit 0 or 1
/// ```
public enum CLI {
    public static let version = "0.1.0"

    /// Runs the CLI; returns the process exit status.
    public static func main(arguments: [String]) -> Int32 {
        let segments = arguments.split(separator: "+", omittingEmptySubsequences: false).map(Array.init)
        var parsed: [Segment] = []
        var options = GlobalOptions()
        do {
            for tokens in segments {
                parsed.append(try Segment(tokens, options: &options))
            }
        } catch {
            return report(error)
        }
        if parsed.contains(where: \.version) {
            Output.out("butterfly version: \"\(version)\" proto revision: \"\(ButterflyRevision.current)\"")
        }
        if parsed.allSatisfy({ $0.words.isEmpty }) {
            if parsed.contains(where: \.help) {
                Output.out(Help.text(for: ""))
                return 0
            }
            if parsed.contains(where: \.version) { return 0 }
            Output.out(Help.text(for: ""))
            return 1
        }
        let client: APIClient
        do {
            client = try options.client()
        } catch {
            return report(error)
        }
        for segment in parsed where !segment.words.isEmpty {
            do {
                try Commands(client: client).run(segment)
            } catch {
                return report(error)
            }
        }
        return 0
    }

    private static func report(_ error: CLIError) -> Int32 {
        Output.error(error.message)
        if let help = error.help { Output.out(Help.text(for: help)) }
        return 1
    }
}

/// Options that apply to the whole invocation, wherever they appear.
struct GlobalOptions {
    /// Given with `-e`; otherwise found by `EndpointDiscovery`.
    var endpoint: String?
    var verbose = false
    var timeout: Int? = 10_000
    var keyPath: String?

    func client() throws(CLIError) -> APIClient {
        var cipher: PayloadCipher?
        if let keyPath {
            do {
                cipher = try KeyFile.load(path: keyPath)
            } catch {
                throw CLIError("cannot load encryption key: \(error.description)")
            }
        }
        let endpoint = try EndpointDiscovery.endpoint(flag: endpoint, environment: ProcessInfo.processInfo.environment)
        return APIClient(endpoint: endpoint, timeout: timeout, verbose: verbose, cipher: cipher)
    }
}

/// One command of a chain: its words (command path and arguments) without global options.
struct Segment {
    var words: [String] = []
    var help = false
    var version = false

    init(_ tokens: [String], options: inout GlobalOptions) throws(CLIError) {
        var index = 0
        func value(_ option: String) throws(CLIError) -> String {
            guard index < tokens.count else { throw CLIError("option \(option) needs a value") }
            index += 1
            return tokens[index - 1]
        }
        while index < tokens.count {
            let token = tokens[index]
            index += 1
            switch token {
            case "-e", "--endpoint":
                // `nic update --ip -e` means "no IP" (the original CLI's spelling), not an endpoint.
                if words.last == "--ip" {
                    words.append("")
                } else {
                    options.endpoint = try value(token)
                }
            case "-v", "--verbose": options.verbose = true
            case "-t", "--timeout":
                let text = try value(token)
                guard let milliseconds = Int(text), milliseconds >= -1 else {
                    throw CLIError("--timeout takes a number of milliseconds, not '\(text)'")
                }
                options.timeout = milliseconds <= 0 ? nil : milliseconds
            case "-k", "--key": options.keyPath = try value(token)
            case "-V", "--version": version = true
            case "-h", "--help": help = true
            default: words.append(token)
            }
        }
    }
}
