import ButterflyProtocol
import SwiftProtobuf

/// The Butterfly API, bytes in and bytes out: the envelope rules (BUTTERFLY-COMPAT.md §3),
/// optional encryption, and dispatch of each `MessageV0` request to `ControlPlane`.
///
/// ```
///  request bytes ─► Messages? ──no──► bare Message{PARSE_ERROR}
///                      │ encrypted? ─► key? open ─► (inner request, once) ─► seal reply
///                      │ empty? ─────► Messages{[Message{REJECTED}]}
///                      ▼ for each Message, in order
///                   message_0? ──no──► Message{VERSION_NOT_MANAGED}
///                      ▼
///                   V0 request ─► Response{status, …} + echoed message_id
/// ```
public final class APIService {
    public let controlPlane: ControlPlane
    private let cipher: PayloadCipher?

    /// The reply to send, and whether the daemon must stop once it is sent (`app_quit`).
    public struct Outcome {
        public var reply: [UInt8]
        public var quit: Bool
    }

    public init(controlPlane: ControlPlane, cipher: PayloadCipher?) {
        self.controlPlane = controlPlane
        self.cipher = cipher
    }

    public func handle(_ request: [UInt8]) -> Outcome {
        // One per API request received, malformed ones included, before anything else (as the
        // original counted), so the first `app_status` ever reports 1.
        controlPlane.requestCounter += 1
        var quit = false
        let reply = handleEnvelope(request, decrypted: false, quit: &quit)
        return Outcome(reply: reply, quit: quit)
    }

    private func handleEnvelope(_ request: [UInt8], decrypted: Bool, quit: inout Bool) -> [UInt8] {
        let messages: Proto_Messages
        do {
            messages = try Proto_Messages(serializedBytes: request)
        } catch {
            Log.info("API: undecodable request of \(request.count) bytes: \(error)")
            return Self.bareError(.parseError)
        }

        if messages.hasEncrypted {
            guard !decrypted else {
                Log.error("API: nested encryption rejected")
                return Self.rejected
            }
            guard cipher != nil else {
                Log.error("API: encrypted request rejected: no encryption key is configured")
                return Self.rejected
            }
            return handleEncrypted(messages.encrypted, quit: &quit)
        }
        if cipher != nil && !decrypted {
            Log.error("API: clear request rejected: an encryption key is configured")
            return Self.rejected
        }
        if messages.messages.isEmpty {
            Log.info("API: empty request rejected")
            return Self.rejected
        }

        var reply = Proto_Messages()
        reply.messages.reserveCapacity(messages.messages.count)
        var acknowledgedChanges: [Int] = []
        for message in messages.messages {
            var answer = Proto_Message()
            answer.revision = ButterflyRevision.current
            if message.hasMessage0 {
                let changesBefore = controlPlane.pendingChangeCount
                answer.message0 = handleV0(message.message0, quit: &quit)
                if controlPlane.pendingChangeCount > changesBefore { acknowledgedChanges.append(reply.messages.count) }
            } else {
                answer.error.code = .versionNotManaged
            }
            reply.messages.append(answer)
        }
        // The batch's changes are saved in one write before any reply says they succeeded; if
        // they cannot be, none of them happened.
        if let failure = controlPlane.commit() {
            for index in acknowledgedChanges {
                var response = MessageV0.Response()
                response.status.status = false
                response.status.error.description_p = APIError.stateNotSaved.description
                response.status.error.detail = "\(failure.description); nothing was changed"
                reply.messages[index].message0.response = response
            }
        }
        return Self.serialize(reply)
    }

    private func handleEncrypted(_ encrypted: Encrypted, quit: inout Bool) -> [UInt8] {
        guard let cipher else { return Self.rejected }
        guard encrypted.hasAes256CbcSha512 else {
            Log.error("API: encryption format not supported")
            return Self.encryptedError(.notSupported)
        }
        let inner: [UInt8]
        do {
            inner = try cipher.open(Array(encrypted.aes256CbcSha512))
        } catch {
            Log.error("API: cannot decrypt request: \(error)")
            return Self.encryptedError(.rejected)
        }
        let innerReply = handleEnvelope(inner, decrypted: true, quit: &quit)
        do {
            let sealed = try cipher.seal(innerReply)
            var reply = Proto_Messages()
            reply.encrypted.aes256CbcSha512 = .init(sealed)
            return Self.serialize(reply)
        } catch {
            Log.error("API: cannot encrypt reply: \(error)")
            return Self.encryptedError(.internalError)
        }
    }

    // MARK: Envelope replies

    static func bareError(_ code: Proto_Error.Code) -> [UInt8] {
        var message = Proto_Message()
        message.revision = ButterflyRevision.current
        message.error.code = code
        return serialize(message)
    }

    /// `Messages` holding one `Message` whose error is REJECTED: the reply to an empty request,
    /// a clear request to a daemon with a key, an encrypted one to a daemon without, and a
    /// nested encryption (which is then itself encrypted).
    static var rejected: [UInt8] {
        var message = Proto_Message()
        message.revision = ButterflyRevision.current
        message.error.code = .rejected
        return serialize(Proto_Messages.with { $0.messages = [message] })
    }

    /// `Messages` whose `encrypted.error` is set: failures inside the encrypted pipeline.
    static func encryptedError(_ code: Encrypted.Error.Code) -> [UInt8] {
        var reply = Proto_Messages()
        reply.encrypted.error.code = code
        return serialize(reply)
    }

    /// Serialising a message we built with every required field set cannot fail; if it ever
    /// does, the client still gets a well-formed INTERNAL_ERROR.
    static func serialize(_ message: some SwiftProtobuf.Message) -> [UInt8] {
        if let bytes: [UInt8] = try? message.serializedBytes() { return bytes }
        Log.error("API: cannot serialise a reply (missing required field)")
        var internalError = Proto_Message()
        internalError.revision = ButterflyRevision.current
        internalError.error.code = .internalError
        return (try? internalError.serializedBytes()) ?? []
    }
}

extension APIError {
    /// A change that could not be saved to the state file (disk full, I/O error): it was not
    /// applied. The original had no state file, so no wording to keep.
    static let stateNotSaved = APIError("State file write failed")
}
