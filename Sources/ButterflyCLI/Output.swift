#if canImport(Glibc)
    import Glibc
#endif

/// Where the CLI writes: results on stdout, errors on stderr.
enum Output {
    static func out(_ line: String) {
        print(line)
    }

    /// Writes `text` as it is, without adding a newline: for text that already ends with one
    /// (protobuf text format ends every field with a newline).
    static func outAsIs(_ text: String) {
        print(text, terminator: "")
    }

    static func error(_ line: String) {
        var text = line + "\n"
        fflush(nil)  // keep stdout and stderr lines in order when both go to one place
        text.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if written <= 0 { break }
                offset += written
            }
        }
    }
}

/// A failure to report on stderr, with the help to print after it (exit code 1).
struct CLIError: Error {
    var message: String
    var help: String?

    init(_ message: String, help: String? = nil) {
        self.message = message
        self.help = help
    }
}
