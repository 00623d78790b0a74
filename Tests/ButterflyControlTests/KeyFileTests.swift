import Foundation
import Testing

@testable import ButterflyControl

/// A file under the temporary directory with a unique name, removed by `remove()`.
private struct TemporaryFile {
    let path: String

    init(contents: String? = nil) throws {
        path =
            FileManager.default.temporaryDirectory.appendingPathComponent("butterfly-keyfile-\(UUID().uuidString)").path
        if let contents { try contents.write(toFile: path, atomically: false, encoding: .utf8) }
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

@Suite struct KeyFileTests {
    @Test func loadsBase64Of32BytesWithTrailingNewline() throws {
        let key = [UInt8](0...31)
        let file = try TemporaryFile(contents: Data(key).base64EncodedString() + "\n")
        defer { file.remove() }
        let cipher = try KeyFile.load(path: file.path)
        // The loaded key is the one in the file: a payload sealed with it opens.
        let reference = try PayloadCipher(key: key)
        let sealed = try reference.seal(Array("ping".utf8))
        #expect(try cipher.open(sealed) == Array("ping".utf8))
    }

    @Test func surroundingWhiteSpaceIsIgnored() throws {
        let file = try TemporaryFile(
            contents: "  \n\t" + Data(repeating: 9, count: 32).base64EncodedString() + " \r\n\n"
        )
        defer { file.remove() }
        #expect(throws: Never.self) { try KeyFile.load(path: file.path) }
    }

    @Test func wrongLengthIsRejected() throws {
        let file = try TemporaryFile(contents: Data(repeating: 1, count: 31).base64EncodedString() + "\n")
        defer { file.remove() }
        let error = #expect(throws: KeyFile.LoadError.self) { try KeyFile.load(path: file.path) }
        #expect(error?.description.contains("31") == true)
        #expect(error?.description.contains(file.path) == true)

        let long = try TemporaryFile(contents: Data(repeating: 1, count: 64).base64EncodedString())
        defer { long.remove() }
        let longError = #expect(throws: KeyFile.LoadError.self) { try KeyFile.load(path: long.path) }
        #expect(longError?.description.contains("64") == true)
    }

    @Test func emptyFileIsRejected() throws {
        let file = try TemporaryFile(contents: "\n")
        defer { file.remove() }
        #expect(throws: KeyFile.LoadError.self) { try KeyFile.load(path: file.path) }
    }

    @Test func nonBase64IsRejected() throws {
        let file = try TemporaryFile(contents: "this is not base64 at all!\n")
        defer { file.remove() }
        let error = #expect(throws: KeyFile.LoadError.self) { try KeyFile.load(path: file.path) }
        #expect(error?.description.contains("not base64") == true)
    }

    @Test func missingFileIsRejected() throws {
        let file = try TemporaryFile()
        let error = #expect(throws: KeyFile.LoadError.self) { try KeyFile.load(path: file.path) }
        #expect(error?.description.contains("cannot read") == true)
        #expect(error?.description.contains(file.path) == true)
    }
}
