import ButterflyControl
import ButterflyDataplane
import ButterflyProtocol
import Foundation

/// The command tree: resolves a segment's words to a command and runs it.
struct Commands {
    let client: APIClient

    /// Command groups and their subcommands; anything else is a leaf command.
    static let groups: [String: [String]] = [
        "": ["nic", "sg", "status", "shutdown", "request", "dump"],
        "nic": ["list", "stats", "details", "firewall", "export", "sg", "add", "del", "update"],
        "nic sg": ["list", "add", "del", "set"],
        "sg": ["list", "add", "del", "rule", "member"],
        "sg rule": ["list", "add", "del"],
        "sg member": ["list", "add", "del"],
    ]

    func run(_ segment: Segment) throws(CLIError) {
        var path = ""
        var arguments = segment.words[...]
        while let children = Self.groups[path] {
            guard let next = arguments.first else {
                if segment.help {
                    Output.out(Help.text(for: path))
                    return
                }
                throw CLIError(path.isEmpty ? "no command given" : "\(path): missing subcommand", help: path)
            }
            if next == "help" {
                Output.out(Help.text(for: path))
                return
            }
            guard children.contains(next) else {
                throw CLIError(
                    path.isEmpty ? "invalid subcommand \(next)" : "invalid \(path) subcommand \(next)",
                    help: path
                )
            }
            path = path.isEmpty ? next : path + " " + next
            arguments.removeFirst()
        }
        if segment.help || arguments.first == "help" {
            Output.out(Help.text(for: path))
            return
        }
        try run(path, Array(arguments))
    }

    private func run(_ path: String, _ arguments: [String]) throws(CLIError) {
        switch path {
        case "nic list": try nicList(arguments)
        case "nic stats": try nicStats(arguments)
        case "nic details": try nicDetails(arguments)
        case "nic firewall": try nicFirewall(arguments)
        case "nic export": try nicExport(arguments)
        case "nic add": try nicAdd(arguments)
        case "nic update": try nicUpdate(arguments)
        case "nic del": try nicDelete(arguments)
        case "nic sg list": try nicSecurityGroupList(arguments)
        case "nic sg add": try nicSecurityGroupAdd(arguments)
        case "nic sg del": try nicSecurityGroupDelete(arguments)
        case "nic sg set": try nicSecurityGroupSet(arguments)
        case "sg list": try securityGroupList(arguments)
        case "sg add": try securityGroupAdd(arguments)
        case "sg del": try securityGroupDelete(arguments)
        case "sg rule list": try ruleList(arguments)
        case "sg rule add": try ruleAdd(arguments)
        case "sg rule del": try ruleDelete(arguments)
        case "sg member list": try memberList(arguments)
        case "sg member add": try memberAdd(arguments)
        case "sg member del": try memberDelete(arguments)
        case "status": try status(arguments)
        case "shutdown": try shutdown(arguments)
        case "request": try request(arguments)
        case "dump": try dump(arguments)
        default: preconditionFailure("command \(path) has no implementation")
        }
    }

    // MARK: Exchanges

    /// Sends the requests in one envelope and returns their responses, failing on the first
    /// error reply.
    @discardableResult
    func call(_ requests: [MessageV0.Request], ids: [String]? = nil) throws(CLIError) -> [MessageV0.Response] {
        let reply = try client.send(Proto_Messages(requests: requests, ids: ids))
        let responses = try Self.checkedResponses(reply)
        guard responses.count == requests.count else {
            throw CLIError("error: expected \(requests.count) responses, received \(responses.count)")
        }
        return responses
    }

    func call(_ fill: (inout MessageV0.Request) -> Void) throws(CLIError) -> MessageV0.Response {
        var request = MessageV0.Request()
        fill(&request)
        return try call([request])[0]
    }

    /// The responses of a reply, or the first error it carries, worded as the original CLI did.
    static func checkedResponses(_ reply: Proto_Messages) throws(CLIError) -> [MessageV0.Response] {
        guard !reply.messages.isEmpty else { throw CLIError("error: no message detected in response") }
        var responses: [MessageV0.Response] = []
        for message in reply.messages {
            if message.hasError { throw CLIError("error in response: \(message.error.code.name)") }
            guard message.hasMessage0, message.message0.hasResponse else {
                throw CLIError("error: no response in MessageV0")
            }
            let response = message.message0.response
            guard response.status.status else {
                let error = response.status.error
                var text = "error in response"
                if error.hasDescription_p {
                    text += "\ndescription: \(error.description_p)"
                } else {
                    text += " no details provided"
                }
                if error.hasDetail { text += "\ndetail: \(error.detail)" }
                throw CLIError(text)
            }
            responses.append(response)
        }
        return responses
    }

    // MARK: Argument helpers

    static func exactly(_ count: Int, _ arguments: [String], _ path: String, _ names: String) throws(CLIError) {
        guard arguments.count == count else {
            throw CLIError(
                arguments.count < count ? "\(path): missing \(names)" : "\(path): too many arguments",
                help: path
            )
        }
    }

    static func atLeast(_ count: Int, _ arguments: [String], _ path: String, _ names: String) throws(CLIError) {
        guard arguments.count >= count else { throw CLIError("\(path): missing \(names)", help: path) }
    }

    /// Reads `--name value` pairs and bare flags; anything else is an error.
    static func options(
        _ arguments: [String],
        path: String,
        values: Set<String>,
        flags: Set<String> = []
    ) throws(CLIError) -> [(String, String)] {
        var result: [(String, String)] = []
        var index = 0
        while index < arguments.count {
            let name = arguments[index]
            index += 1
            if flags.contains(name) {
                result.append((name, ""))
            } else if values.contains(name) {
                guard index < arguments.count else { throw CLIError("\(path): \(name) needs a value", help: path) }
                result.append((name, arguments[index]))
                index += 1
            } else {
                throw CLIError("\(path): unknown argument '\(name)'", help: path)
            }
        }
        return result
    }

    static func boolean(_ text: String, option: String, path: String) throws(CLIError) -> Bool {
        switch text {
        case "true": return true
        case "false": return false
        default: throw CLIError("\(path): \(option) takes true or false, not '\(text)'", help: path)
        }
    }
}
