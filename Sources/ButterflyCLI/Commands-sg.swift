import ButterflyControl
import ButterflyDataplane
import ButterflyProtocol

extension Commands {
    func securityGroupList(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(0, arguments, "sg list", "")
        for id in try call({ $0.sgList = true }).sgList { Output.out(id) }
    }

    func securityGroupAdd(_ arguments: [String]) throws(CLIError) {
        try Self.atLeast(1, arguments, "sg add", "SG")
        try call(arguments.map { id in MessageV0.Request.with { $0.sgAdd.id = id } })
    }

    func securityGroupDelete(_ arguments: [String]) throws(CLIError) {
        try Self.atLeast(1, arguments, "sg del", "SG")
        try call(arguments.map { id in MessageV0.Request.with { $0.sgDel = id } })
    }

    func ruleList(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(1, arguments, "sg rule list", "SG")
        for rule in try call({ $0.sgRuleList = arguments[0] }).sgRuleList {
            Output.out(try Self.ruleLine(rule))
        }
    }

    /// `<hash> | direction: INBOUND - IP protocol: 6 - port start: 22 - port end: 22 - cidr: …`
    static func ruleLine(_ rule: MessageV0.Rule) throws(CLIError) -> String {
        let none = "Ø"
        let direction = rule.direction == .outbound ? "OUTBOUND" : "INBOUND"
        let portStart = rule.hasPortStart ? "\(rule.portStart)" : none
        let portEnd = rule.hasPortEnd ? "\(rule.portEnd)" : none
        let cidr = rule.hasCidr ? "\(rule.cidr.address)/\(rule.cidr.maskSize)" : none
        let members = rule.hasSecurityGroup ? rule.securityGroup : none
        return "\(try hash(rule)) | direction: \(direction) - IP protocol: \(rule.protocol) - port start: \(portStart)"
            + " - port end: \(portEnd) - cidr: \(cidr) - members of sg: \(members)"
    }

    static func hash(_ rule: MessageV0.Rule) throws(CLIError) -> String {
        do {
            return RuleHash.hash(of: try FirewallRule(proto: rule))
        } catch {
            throw CLIError("the daemon returned an invalid rule: \(error.description)")
        }
    }

    func ruleAdd(_ arguments: [String]) throws(CLIError) {
        try Self.atLeast(1, arguments, "sg rule add", "SG")
        let rule = try Self.parseRule(Array(arguments.dropFirst()), path: "sg rule add")
        var request = MessageV0.SgRuleAddReq()
        request.sgID = arguments[0]
        request.rule = rule
        _ = try call { $0.sgRuleAdd = request }
    }

    func ruleDelete(_ arguments: [String]) throws(CLIError) {
        let path = "sg rule del"
        try Self.atLeast(2, arguments, path, "SG and RULE_HASH or rule options")
        var request = MessageV0.SgRuleDelReq()
        request.sgID = arguments[0]
        if arguments[1].hasPrefix("-") {
            request.rule = try Self.parseRule(Array(arguments.dropFirst()), path: path)
        } else {
            try Self.exactly(2, arguments, path, "SG and RULE_HASH")
            let wanted = arguments[1]
            let rules = try call { $0.sgRuleList = arguments[0] }.sgRuleList
            var found: MessageV0.Rule?
            for rule in rules where try Self.hash(rule) == wanted {
                found = rule
                break
            }
            guard let found else { throw CLIError("no rule found with hash \(wanted)") }
            request.rule = found
        }
        _ = try call { $0.sgRuleDel = request }
    }

    /// Parses `sg rule add` options into a rule, checking locally what the daemon would refuse.
    static func parseRule(_ arguments: [String], path: String) throws(CLIError) -> MessageV0.Rule {
        var rule = MessageV0.Rule()
        rule.direction = .inbound
        var hasProtocol = false
        var portStart: UInt32?
        var portEnd: UInt32?
        func port(_ text: String, _ option: String) throws(CLIError) -> UInt32 {
            guard let value = UInt32(text), value <= 65535 else {
                throw CLIError("\(path): \(option) takes a port between 0 and 65535, not '\(text)'", help: path)
            }
            return value
        }
        for (name, value) in try options(
            arguments,
            path: path,
            values: ["--dir", "--ip-proto", "--port", "--port-start", "--port-end", "--cidr", "--sg-members"]
        ) {
            switch name {
            case "--dir":
                switch value {
                case "in": rule.direction = .inbound
                case "out": rule.direction = .outbound
                default: throw CLIError("\(path): --dir takes in or out, not '\(value)'", help: path)
                }
            case "--ip-proto":
                if value == "all" {
                    rule.protocol = -1
                } else if let named = FirewallRule.protocolNames.first(where: { $0.name == value }) {
                    rule.protocol = Int32(named.number)
                } else if let number = Int32(value), (-1...255).contains(number) {
                    rule.protocol = number
                } else {
                    throw CLIError("\(path): --ip-proto argument not recognized: '\(value)'", help: path)
                }
                hasProtocol = true
            case "--port":
                portStart = try port(value, name)
                portEnd = portStart
            case "--port-start": portStart = try port(value, name)
            case "--port-end": portEnd = try port(value, name)
            case "--cidr":
                let parts = value.split(separator: "/", omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, let mask = UInt32(parts[1]) else {
                    throw CLIError(
                        "\(path): --cidr format not recognized: '\(value)' (expected ADDRESS/MASK)",
                        help: path
                    )
                }
                rule.cidr.address = String(parts[0])
                rule.cidr.maskSize = mask
            case "--sg-members": rule.securityGroup = value
            default: break
            }
        }
        guard hasProtocol else { throw CLIError("\(path): --ip-proto is mandatory", help: path) }
        if rule.protocol == 6 || rule.protocol == 17 {
            guard portStart != nil && portEnd != nil else {
                throw CLIError("\(path): wrong port configuration: tcp and udp rules need ports", help: path)
            }
        }
        if let portStart, let portEnd {
            guard portStart <= portEnd else {
                throw CLIError("\(path): wrong port configuration: start \(portStart) > end \(portEnd)", help: path)
            }
            rule.portStart = portStart
            rule.portEnd = portEnd
        } else if portStart != nil || portEnd != nil {
            throw CLIError("\(path): wrong port configuration: give both --port-start and --port-end", help: path)
        }
        switch (rule.hasCidr, rule.hasSecurityGroup) {
        case (true, true): throw CLIError("\(path): --cidr can't be set with --sg-members", help: path)
        case (false, false): throw CLIError("\(path): you must set --cidr or --sg-members", help: path)
        default: break
        }
        return rule
    }

    func memberList(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(1, arguments, "sg member list", "SG")
        for member in try call({ $0.sgMemberList = arguments[0] }).sgMemberList { Output.out(member) }
    }

    func memberAdd(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(2, arguments, "sg member add", "SG and IP")
        var request = MessageV0.SgMemberAddReq()
        request.sgID = arguments[0]
        request.member = arguments[1]
        _ = try call { $0.sgMemberAdd = request }
    }

    func memberDelete(_ arguments: [String]) throws(CLIError) {
        try Self.exactly(2, arguments, "sg member del", "SG and IP")
        var request = MessageV0.SgMemberDelReq()
        request.sgID = arguments[0]
        request.member = arguments[1]
        _ = try call { $0.sgMemberDel = request }
    }
}
