import Foundation

/// An encryption key file: base64 of 32 random bytes (surrounding white space ignored).
/// Make one with `head -c 32 /dev/urandom | base64 > key`.
public enum KeyFile {
    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func load(path: String) throws(LoadError) -> PayloadCipher {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LoadError(description: "cannot read encryption key file \(path): \(error.localizedDescription)")
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let data = Data(base64Encoded: trimmed) else {
            throw LoadError(description: "encryption key file \(path) is not base64")
        }
        guard data.count == PayloadCipher.keySize else {
            throw LoadError(
                description:
                    "encryption key file \(path) holds \(data.count) bytes; it must hold \(PayloadCipher.keySize)"
            )
        }
        do {
            return try PayloadCipher(key: Array(data))
        } catch {
            throw LoadError(description: "bad encryption key in \(path)")
        }
    }
}
