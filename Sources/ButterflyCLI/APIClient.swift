import ButterflyControl
import ButterflyProtocol
import SwiftProtobuf

/// Sends one `Messages` request to the daemon and returns its reply, with the CLI's
/// verbose printing and optional encryption.
struct APIClient {
    var endpoint: String
    /// Milliseconds to wait for a reply; `nil` waits forever.
    var timeout: Int?
    var verbose: Bool
    var cipher: PayloadCipher?

    func send(_ request: Proto_Messages) throws(CLIError) -> Proto_Messages {
        if verbose {
            Output.out(
                "#########################\n# Message to be sent:\n\(request.textFormatString())\n#########################"
            )
        }
        var bytes: [UInt8]
        do {
            bytes = try request.serializedBytes()
        } catch {
            throw CLIError("cannot encode the request: \(error)")
        }
        if let cipher {
            do {
                var envelope = Proto_Messages()
                envelope.encrypted.aes256CbcSha512 = .init(try cipher.seal(bytes))
                bytes = try envelope.serializedBytes()
            } catch {
                throw CLIError("cannot encrypt the request: \(error)")
            }
            if verbose { Output.out("Request is encrypted") }
        }

        let replyBytes = try exchange(bytes)
        var reply: Proto_Messages
        do {
            reply = try Proto_Messages(serializedBytes: replyBytes)
        } catch {
            // A bare `Message` (PARSE_ERROR / INTERNAL_ERROR) is what the daemon sends when it
            // cannot read the request at all.
            if let bare = try? Proto_Message(serializedBytes: replyBytes), bare.hasError {
                throw CLIError("error in response: \(bare.error.code.name)")
            }
            throw CLIError("cannot decode the response")
        }
        if reply.hasEncrypted && reply.messages.isEmpty {
            if verbose { Output.out("Received encrypted response") }
            if reply.encrypted.hasError {
                throw CLIError("Encrypted message error: \(reply.encrypted.error.code.name)")
            }
            guard let cipher else { throw CLIError("error: encrypted response but no key given (-k)") }
            do {
                let inner = try cipher.open(Array(reply.encrypted.aes256CbcSha512))
                reply = try Proto_Messages(serializedBytes: inner)
            } catch {
                throw CLIError("cannot decrypt the response: \(error)")
            }
        } else if verbose {
            Output.out("Received clear response")
        }
        if verbose {
            Output.out(
                "#########################\n# Received message:\n\(reply.textFormatString())\n#########################"
            )
        }
        return reply
    }

    private func exchange(_ bytes: [UInt8]) throws(CLIError) -> [UInt8] {
        if let problem = EndpointDiscovery.ipcProblem(endpoint) { throw CLIError(problem) }
        do {
            let context = ZMQContext()
            let socket = try ZMQSocket(context: context, kind: .request)
            defer { socket.close() }
            try socket.setOption(ZMQRawOption.receiveTimeout, Int32(clamping: timeout ?? -1))
            try socket.connect(endpoint)
            try socket.send(bytes)
            guard let frames = try socket.receive() else {
                throw CLIError("no reply from \(endpoint) within \(timeout ?? 0) ms (is butterflyd running?)")
            }
            return frames.first ?? []
        } catch let error as CLIError {
            throw error
        } catch {
            throw CLIError("\(error)")
        }
    }
}

extension Proto_Error.Code {
    var name: String {
        switch self {
        case .parseError: "PARSE_ERROR"
        case .internalError: "INTERNAL_ERROR"
        case .versionNotManaged: "VERSION_NOT_MANAGED"
        case .emptyRequest: "EMPTY_REQUEST"
        case .rejected: "REJECTED"
        }
    }
}

extension Encrypted.Error.Code {
    var name: String {
        switch self {
        case .notSupported: "NOT_SUPPORTED"
        case .rejected: "REJECTED"
        case .internalError: "INTERNAL_ERROR"
        }
    }
}
