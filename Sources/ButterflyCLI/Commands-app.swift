import ButterflyControl
import ButterflyProtocol
import Foundation
import SwiftProtobuf

extension Commands {
    func status(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(0, arguments, "status", "")
        let response = try call { $0.appStatus = true }
        guard response.hasAppStatus else { throw CLIError("no status received") }
        let status = response.appStatus
        if status.hasStartDate { Output.out("start date: \(status.startDate)") }
        if status.hasCurrentDate { Output.out("current date: \(status.currentDate)") }
        if status.hasRequestCounter { Output.out("request counter: \(status.requestCounter)") }
        Output.out("dot graph: \n\(status.graphDot)")
    }

    func shutdown(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(0, arguments, "shutdown", "")
        _ = try call { $0.appQuit = true }
    }

    func request(_ arguments: [String]) throws(CLIError) {
        let toStdout = arguments.contains("--stdout")
        let files = arguments.filter { $0 != "--stdout" }
        try Self.exactly(1, files, "request", "REQUEST_FILE")
        guard let text = try? String(contentsOfFile: files[0], encoding: .utf8), !text.isEmpty else {
            throw CLIError("failed to open \(files[0])")
        }
        let request: Proto_Messages
        do {
            request = try Proto_Messages(textFormatString: text)
        } catch {
            throw CLIError("Error while encoding input to protobuf: \(files[0]): \(error)")
        }
        let reply = try client.send(request)
        // The text format ends with a newline already; the original printed it as it is.
        if toStdout && !client.verbose { Output.outAsIs(reply.textFormatString()) }
        _ = try Self.checkedResponses(reply)
    }

    func dump(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(0, arguments, "dump", "")
        let responses = try call(
            [MessageV0.Request.with { $0.nicDetails = "" }, MessageV0.Request.with { $0.sgDetails = "" }],
            ids: ["nics", "sgs"]
        )
        Output.out(ConfigurationDump.text(nics: responses[0].nicDetails, securityGroups: responses[1].sgDetails))
    }
}
