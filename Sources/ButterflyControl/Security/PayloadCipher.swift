import CLibCrypto

#if canImport(Glibc)
    import Glibc
#endif

/// The Butterfly API's `aes256cbc_sha512` payload, bit-compatible with the original.
///
/// ```
///  payload = IV(16) ‖ X
///  X       = CBC-transform(key, IV, SHA512(plain)(64) ‖ plain ‖ PKCS#7 pad(1…16 bytes))
/// ```
///
/// Wire quirk: the original *produces* X with AES-256-CBC's **decryption** transform and
/// *reads* it with the **encryption** transform (P₁ = E(X₁ ⊕ IV), Pᵢ = E(Xᵢ ⊕ Pᵢ₋₁) undoes
/// Xᵢ = D(Pᵢ) ⊕ Pᵢ₋₁). A textbook AES-CBC peer does not interoperate; we replicate the quirk
/// in both directions. The pad length counts `plain` only (SHA-512 is 4 whole blocks).
public struct PayloadCipher: Sendable {
    public static let keySize = 32
    static let blockSize = 16
    static let digestSize = 64

    private let key: [UInt8]

    public enum Failure: Error, Equatable {
        case badKeySize(Int)
        case malformed(String)
        case digestMismatch
        case crypto(String)
    }

    public init(key: [UInt8]) throws(Failure) {
        guard key.count == Self.keySize else { throw .badKeySize(key.count) }
        self.key = key
    }

    /// Seals `plain` with a fresh random IV.
    public func seal(_ plain: [UInt8]) throws(Failure) -> [UInt8] {
        var iv = [UInt8](repeating: 0, count: Self.blockSize)
        guard RAND_bytes(&iv, Int32(iv.count)) == 1 else { throw .crypto("RAND_bytes failed") }
        return try seal(plain, iv: iv)
    }

    /// Seals with a given IV: for test vectors only; a reused IV leaks equal prefixes.
    public func seal(_ plain: [UInt8], iv: [UInt8]) throws(Failure) -> [UInt8] {
        precondition(iv.count == Self.blockSize)
        let padLength = Self.blockSize - plain.count % Self.blockSize
        var clear = Self.sha512(plain)
        clear.reserveCapacity(Self.digestSize + plain.count + padLength)
        clear += plain
        clear += [UInt8](repeating: UInt8(padLength), count: padLength)
        return iv + (try transform(clear, iv: iv, encryptDirection: false))
    }

    /// Opens a payload sealed by `seal` (or by the original Butterfly), checking its digest.
    public func open(_ payload: [UInt8]) throws(Failure) -> [UInt8] {
        guard payload.count >= Self.blockSize + Self.digestSize + Self.blockSize else {
            throw .malformed("payload of \(payload.count) bytes is too short")
        }
        guard payload.count % Self.blockSize == 0 else {
            throw .malformed("payload of \(payload.count) bytes is not a whole number of blocks")
        }
        let iv = Array(payload[0..<Self.blockSize])
        let clear = try transform(Array(payload[Self.blockSize...]), iv: iv, encryptDirection: true)
        let padLength = Int(clear[clear.count - 1])
        guard (1...Self.blockSize).contains(padLength),
            clear[(clear.count - padLength)...].allSatisfy({ $0 == UInt8(padLength) })
        else { throw .malformed("bad padding") }
        let plain = Array(clear[Self.digestSize..<(clear.count - padLength)])
        guard Self.constantTimeEqual(Self.sha512(plain), Array(clear[0..<Self.digestSize])) else {
            throw .digestMismatch
        }
        return plain
    }

    /// Raw AES-256-CBC over whole blocks, with the library's padding off.
    private func transform(_ input: [UInt8], iv: [UInt8], encryptDirection: Bool) throws(Failure) -> [UInt8] {
        guard let context = EVP_CIPHER_CTX_new() else { throw .crypto("EVP_CIPHER_CTX_new failed") }
        defer { EVP_CIPHER_CTX_free(context) }
        guard EVP_CipherInit_ex(context, EVP_aes_256_cbc(), nil, key, iv, encryptDirection ? 1 : 0) == 1,
            EVP_CIPHER_CTX_set_padding(context, 0) == 1
        else { throw .crypto("cipher initialisation failed") }
        var output = [UInt8](repeating: 0, count: input.count + Self.blockSize)
        var written: Int32 = 0
        var finalWritten: Int32 = 0
        let ok = output.withUnsafeMutableBufferPointer { out in
            EVP_CipherUpdate(context, out.baseAddress, &written, input, Int32(input.count)) == 1
                && EVP_CipherFinal_ex(context, out.baseAddress! + Int(written), &finalWritten) == 1
        }
        guard ok, Int(written + finalWritten) == input.count else { throw .crypto("cipher transform failed") }
        output.removeLast(output.count - input.count)
        return output
    }

    static func sha512(_ data: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: digestSize)
        _ = SHA512(data, data.count, &digest)
        return digest
    }

    private static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
