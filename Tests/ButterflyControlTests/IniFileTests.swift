import Testing

@testable import ButterflyControl

@Suite struct IniFileTests {
    @Test func sectionsAndKeys() throws {
        let ini = try IniFile(
            text: """
                [general]
                ip = 198.51.100.1
                endpoint=tcp://0.0.0.0:9999

                [security]
                encryption_key_path = /etc/butterfly/key
                """
        )
        #expect(
            ini.sections == [
                "general": ["ip": "198.51.100.1", "endpoint": "tcp://0.0.0.0:9999"],
                "security": ["encryption_key_path": "/etc/butterfly/key"],
            ]
        )
    }

    @Test func commentsAndBlankLines() throws {
        let ini = try IniFile(
            text: """
                # a comment
                ; another comment
                   # indented comment

                [general]
                \t; tab-indented comment
                log-level = debug
                """
        )
        #expect(ini.sections == ["general": ["log-level": "debug"]])
    }

    @Test func quotesAreStripped() throws {
        let ini = try IniFile(
            text: """
                [general]
                a = "quoted value"
                b = "
                c = ""
                d = "only-leading
                e = in"side
                """
        )
        let general = try #require(ini.sections["general"])
        #expect(general["a"] == "quoted value")
        #expect(general["b"] == "\"")
        #expect(general["c"] == "")
        #expect(general["d"] == "\"only-leading")
        #expect(general["e"] == "in\"side")
    }

    @Test func keysBeforeAnySectionGoToGeneral() throws {
        let ini = try IniFile(text: "ip = 10.0.0.1\n[security]\nx = y\n")
        #expect(ini.sections == ["general": ["ip": "10.0.0.1"], "security": ["x": "y"]])
    }

    @Test func whiteSpaceIsTrimmed() throws {
        let ini = try IniFile(text: "  [ general ]  \n\t key \t=\t value with spaces \t\n")
        #expect(ini.sections == ["general": ["key": "value with spaces"]])
    }

    @Test func emptyValueAndEqualsInValue() throws {
        let ini = try IniFile(text: "a =\nb = x=y=z\n")
        #expect(ini.sections["general"] == ["a": "", "b": "x=y=z"])
    }

    @Test func lastDuplicateWins() throws {
        let ini = try IniFile(text: "[general]\nip = 1.1.1.1\nip = 2.2.2.2\n")
        #expect(ini.sections["general"]?["ip"] == "2.2.2.2")
    }

    @Test func sectionCanBeReopened() throws {
        let ini = try IniFile(text: "[a]\nx = 1\n[b]\ny = 2\n[a]\nz = 3\n")
        #expect(ini.sections == ["a": ["x": "1", "z": "3"], "b": ["y": "2"]])
    }

    @Test func emptyText() throws {
        #expect(try IniFile(text: "").sections.isEmpty)
        #expect(try IniFile(text: "\n\n# only comments\n").sections.isEmpty)
    }

    @Test func malformedHeader() {
        #expect(throws: IniFile.ParseError(line: 3, reason: "malformed section header '[general'")) {
            try IniFile(text: "# comment\n\n[general\nip = 1.2.3.4\n")
        }
        #expect(throws: IniFile.ParseError(line: 1, reason: "malformed section header '[]'")) {
            try IniFile(text: "[]\n")
        }
    }

    @Test func lineWithoutEquals() {
        let error = #expect(throws: IniFile.ParseError.self) {
            try IniFile(text: "[general]\nip = 1.2.3.4\njust some words\n")
        }
        #expect(error?.line == 3)
        #expect(error?.description == "line 3: expected 'key = value', found 'just some words'")
    }

    @Test func emptyKey() {
        let error = #expect(throws: IniFile.ParseError.self) { try IniFile(text: "[general]\n = value\n") }
        #expect(error?.line == 2)
        #expect(error?.description == "line 2: empty key")
    }

    /// `trimmingWhitespace` strips "\r", so CRLF files are meant to be read. But Swift treats
    /// "\r\n" as a single Character, which `split(separator: "\n")` does not split on.
    @Test func crlfLineEndings() throws {
        let ini = try IniFile(text: "[general]\r\nip = 198.51.100.1\r\nlog-level = info\r\n")
        #expect(ini.sections == ["general": ["ip": "198.51.100.1", "log-level": "info"]])
    }
}
