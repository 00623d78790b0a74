import Testing

@testable import ButterflyControl

private func hexBytes(_ hex: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        bytes.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}

@Suite struct PayloadCipherTests {
    static let key = [UInt8](0...31)
    static let iv = [UInt8](0xA0...0xAF)

    /// Produced independently of the code under test, with Python's `cryptography` package:
    ///
    ///     python3 -c '
    ///     import hashlib
    ///     from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    ///     key = bytes(range(32)); iv = bytes(range(0xA0, 0xB0)); plain = b"hello"
    ///     pad = 16 - len(plain) % 16
    ///     clear = hashlib.sha512(plain).digest() + plain + bytes([pad]) * pad
    ///     dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    ///     prev = iv; x = b""
    ///     for i in range(0, len(clear), 16):
    ///         blk = clear[i:i+16]; x += bytes(a ^ b for a, b in zip(dec.update(blk), prev)); prev = blk
    ///     print("quirk", (iv + x).hex())
    ///     enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ///     print("textbook", (iv + enc.update(clear) + enc.finalize()).hex())'
    ///
    /// "quirk" is Xᵢ = AES-Decrypt(Pᵢ) ⊕ Pᵢ₋₁ with P₀ = IV over SHA512(plain) ‖ plain ‖ pad, i.e.
    /// the CBC *decryption* transform applied to the clear text, as the original Butterfly does.
    static let quirkHello = hexBytes(
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
            + "f3c0dd1fe94bb67dc3b71b6a299dbf452ec2107e10fb45232445e379a96ceda8"
            + "a6bbecd9e7caaef5340bf85144bdcd94a895408a27e4fbe3376304402c7d0ce1"
            + "0c8e6a42fffb030f280541d32cf41912"
    )

    /// "textbook": plain AES-256-CBC *encryption* of the same padded clear text with the same IV.
    static let textbookHello = hexBytes(
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
            + "bfef7ca487251d4c762f1de9ebc6d0e3c3b65ac7852914aff4ae03d38dbf6070"
            + "cef82c1f35c1450d5c4df81794c24416244934212e003bd1e78adfc3a1e70b84"
            + "b4ced47b6af93a1f921a398fc5ce15a6"
    )

    static func cipher() throws -> PayloadCipher { try PayloadCipher(key: key) }

    @Test func keySize() {
        #expect(throws: PayloadCipher.Failure.badKeySize(31)) {
            try PayloadCipher(key: [UInt8](repeating: 1, count: 31))
        }
        #expect(throws: PayloadCipher.Failure.badKeySize(33)) {
            try PayloadCipher(key: [UInt8](repeating: 1, count: 33))
        }
        #expect(throws: PayloadCipher.Failure.badKeySize(0)) { try PayloadCipher(key: []) }
        #expect(throws: Never.self) { try PayloadCipher(key: Self.key) }
    }

    @Test(arguments: [0, 1, 15, 16, 17, 100, 4096])
    func roundTrip(_ length: Int) throws {
        let cipher = try Self.cipher()
        let plain = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let sealed = try cipher.seal(plain)
        let padded = (length / 16 + 1) * 16
        #expect(sealed.count == 16 + 64 + padded)
        #expect(try cipher.open(sealed) == plain)
    }

    @Test func freshIVEachTime() throws {
        let cipher = try Self.cipher()
        let a = try cipher.seal([1, 2, 3])
        let b = try cipher.seal([1, 2, 3])
        #expect(a[0..<16] != b[0..<16])
        #expect(a != b)
    }

    @Test func fixedIVIsDeterministicAndLeadsThePayload() throws {
        let cipher = try Self.cipher()
        let sealed = try cipher.seal(Array("hello".utf8), iv: Self.iv)
        #expect(Array(sealed[0..<16]) == Self.iv)
        #expect(try cipher.seal(Array("hello".utf8), iv: Self.iv) == sealed)
    }

    @Test func quirkVectorIsProduced() throws {
        let sealed = try Self.cipher().seal(Array("hello".utf8), iv: Self.iv)
        #expect(sealed == Self.quirkHello)
    }

    @Test func quirkVectorIsAccepted() throws {
        #expect(try Self.cipher().open(Self.quirkHello) == Array("hello".utf8))
    }

    @Test func textbookCBCIsRejected() throws {
        let cipher = try Self.cipher()
        #expect(Self.textbookHello.count == Self.quirkHello.count)
        #expect(throws: PayloadCipher.Failure.self) { try cipher.open(Self.textbookHello) }
    }

    @Test func everyTamperedByteIsRejected() throws {
        let cipher = try Self.cipher()
        let sealed = try cipher.seal(Array("a message worth protecting".utf8))
        for index in sealed.indices {
            var tampered = sealed
            tampered[index] ^= 0x01
            #expect(throws: PayloadCipher.Failure.self, "byte \(index)") { try cipher.open(tampered) }
        }
    }

    @Test func wrongKeyIsRejected() throws {
        let sealed = try Self.cipher().seal(Array("secret".utf8))
        let other = try PayloadCipher(key: [UInt8](repeating: 0x42, count: 32))
        #expect(throws: PayloadCipher.Failure.self) { try other.open(sealed) }
    }

    @Test func tooShort() throws {
        let cipher = try Self.cipher()
        for length in [0, 1, 16, 80, 95] {
            let error = #expect(throws: PayloadCipher.Failure.self) {
                try cipher.open([UInt8](repeating: 0, count: length))
            }
            guard case .malformed(let reason) = error else {
                Issue.record("length \(length): expected .malformed, got \(String(describing: error))")
                continue
            }
            #expect(reason.contains("too short"))
        }
    }

    @Test func notWholeBlocks() throws {
        let cipher = try Self.cipher()
        for length in [97, 100, 111, 113] {
            let error = #expect(throws: PayloadCipher.Failure.self) {
                try cipher.open([UInt8](repeating: 0, count: length))
            }
            guard case .malformed(let reason) = error else {
                Issue.record("length \(length): expected .malformed, got \(String(describing: error))")
                continue
            }
            #expect(reason.contains("whole number of blocks"))
        }
    }

    @Test func truncatedByOneBlockIsRejected() throws {
        let cipher = try Self.cipher()
        let sealed = try cipher.seal([UInt8](repeating: 7, count: 40))
        #expect(throws: PayloadCipher.Failure.self) { try cipher.open(Array(sealed.dropLast(16))) }
    }

    @Test func sha512KnownAnswer() {
        // SHA-512("abc"), FIPS 180-2 appendix C.
        let expected = hexBytes(
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                + "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        )
        #expect(PayloadCipher.sha512(Array("abc".utf8)) == expected)
    }
}
