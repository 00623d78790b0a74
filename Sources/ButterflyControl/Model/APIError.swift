/// A request the model refuses. `description` keeps the original Butterfly wording exactly
/// (scripts match on it); `detail` says what precisely was wrong and travels in the optional
/// `MessageV0.Error.detail` field.
public struct APIError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
    public var detail: String?

    public init(_ description: String, detail: String? = nil) {
        self.description = description
        self.detail = detail
    }

    static func badNIC(_ detail: String) -> APIError { APIError("Bad NIC format", detail: detail) }
    static func badIP(_ detail: String) -> APIError { APIError("Bad IP format", detail: detail) }
    static func badRule(_ detail: String) -> APIError { APIError("Bad Security Group rule format", detail: detail) }
    static func badNICUpdate(_ detail: String) -> APIError { APIError("Bad Nic update format", detail: detail) }
    static func badSecurityGroup(_ detail: String) -> APIError { APIError("Bad Security Group format", detail: detail) }
    /// The original's wording, trailing space included.
    static func badLogLevel(_ detail: String) -> APIError {
        APIError("Application configuration failed: log level: failed ", detail: detail)
    }
    static let emptyRequest = APIError("MessageV0 appears to not have any request")
    static func nicNotFound(_ id: String) -> APIError { APIError("NIC: \(id) not found") }
    static let securityGroupNotFound = APIError("Security Group not found")
}
