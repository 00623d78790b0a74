import ButterflyDataplane
import ButterflyProtocol
import Foundation

/// Dispatch of one `MessageV0` request: the first request field present wins, in the order
/// of the schema (BUTTERFLY-COMPAT.md §2).
extension APIService {
    func handleV0(_ message: MessageV0, quit: inout Bool) -> MessageV0 {
        var reply = MessageV0()
        if message.hasMessageID { reply.messageID = message.messageID }
        var response = MessageV0.Response()
        do throws(APIError) {
            guard message.hasRequest else { throw APIError.emptyRequest }
            let version = controlPlane.reconciler.snapshot.version
            try dispatch(message.request, into: &response, quit: &quit)
            if controlPlane.reconciler.snapshot.version != version { controlPlane.applied(message.request) }
            response.status.status = true
        } catch {
            Log.info("API: request refused: \(error.description)\(error.detail.map { " (\($0))" } ?? "")")
            response = MessageV0.Response()
            response.status.status = false
            response.status.error.description_p = error.description
            if let detail = error.detail { response.status.error.detail = detail }
        }
        reply.response = response
        return reply
    }

    private func dispatch(
        _ request: MessageV0.Request,
        into response: inout MessageV0.Response,
        quit: inout Bool
    ) throws(APIError) {
        let control = controlPlane
        if request.hasNicAdd {
            var nic: NIC
            do {
                nic = try NIC(proto: request.nicAdd)
                try nic.validate(path: control.reconciler.path(for: nic))
            } catch {
                throw .badNIC(error.detail ?? error.description)
            }
            if let requested = nic.packetTracePath {
                do throws(TraceDirectory.Refusal) {
                    nic.packetTracePath = try control.reconciler.confineTracePath(requested)
                } catch {
                    throw .badNIC(error.description)
                }
            }
            try control.prepare(nic)
            try control.mutate { model throws(APIError) in try model.addNIC(nic) }
            response.nicAdd.path = control.reconciler.path(for: nic)
            Log.info("NIC \(nic.id) added (vni \(nic.vni), mac \(nic.mac))")
        } else if request.hasNicUpdate {
            var update: Model.NICUpdate
            do {
                update = try Model.NICUpdate(proto: request.nicUpdate)
            } catch {
                throw .badNICUpdate(error.detail ?? error.description)
            }
            // Paths in requests stay inside the trace directory (TraceDirectory).
            if let requested = update.packetTracePath {
                do throws(TraceDirectory.Refusal) {
                    update.packetTracePath = try control.reconciler.confineTracePath(requested)
                } catch {
                    throw .badNICUpdate(error.description)
                }
            }
            try control.mutate { model throws(APIError) in try model.updateNIC(id: request.nicUpdate.id, update) }
        } else if request.hasNicDel {
            try control.mutate { model in model.deleteNIC(id: request.nicDel) }
        } else if request.hasNicList {
            response.nicList = control.sortedNICIDs
        } else if request.hasNicDetails {
            let id = request.nicDetails
            let nics: [NIC]
            if id.isEmpty {
                nics = control.model.nics.values.sorted { $0.id < $1.id }
            } else {
                guard let nic = control.model.nics[id] else { throw .nicNotFound(id) }
                nics = [nic]
            }
            let reconciler = control.reconciler
            response.nicDetails = nics.map { nic in
                nic.details(
                    path: reconciler.path(for: nic),
                    traceByDefault: reconciler.traceByDefault,
                    defaultTracePath: reconciler.defaultTracePath(forNICID: nic.id)
                )
            }
        } else if request.hasNicExport {
            let id = request.nicExport
            guard control.model.nics[id] != nil else { throw .nicNotFound(id) }
            // The NIC's tracked connections in the format of ConnectionExport (docs/FIREWALL.md).
            guard let exported = control.exportConnections(id) else {
                throw APIError("NIC export failed", detail: "the data plane did not answer in time")
            }
            response.nicExport.fwData.data = Data(exported)
        } else if request.hasNicStats {
            let id = request.nicStats
            guard control.model.nics[id] != nil else { throw .nicNotFound(id) }
            let counters = control.nicCounters(id) ?? NICCounters()
            response.nicStats.in = counters.inBytes
            response.nicStats.out = counters.outBytes
            response.nicStats.inPackets = counters.inPackets
            response.nicStats.outPackets = counters.outPackets
            response.nicStats.dropped = counters.drops.reduce(0) { $0 + $1.packets }
            response.nicStats.connections = counters.connections
            response.nicStats.drops = counters.drops.map { drop in
                MessageV0.DropCounter.with {
                    $0.reason = drop.reason
                    $0.packets = drop.packets
                }
            }
            if let bench = counters.bench {
                response.nicStats.bench = MessageV0.BenchStats.with {
                    $0.probesSent = bench.probesSent
                    $0.repliesReceived = bench.repliesReceived
                    $0.rttMinNs = bench.minimumNanoseconds
                    $0.rttAvgNs = bench.averageNanoseconds
                    $0.rttMaxNs = bench.maximumNanoseconds
                    $0.requestsAnswered = bench.requestsAnswered
                }
            }
        } else if request.hasSgAdd {
            let group: SecurityGroup
            do {
                group = try SecurityGroup(proto: request.sgAdd)
            } catch {
                throw .badSecurityGroup(error.detail ?? error.description)
            }
            try control.mutate { model in model.setSecurityGroup(group) }
        } else if request.hasSgDel {
            try control.mutate { model in model.deleteSecurityGroup(id: request.sgDel) }
        } else if request.hasSgList {
            response.sgList = control.model.securityGroups.keys.sorted()
        } else if request.hasSgRuleAdd {
            let id = try SecurityGroup.id(sgID: request.sgRuleAdd.sgID)
            let rule = try FirewallRule(proto: request.sgRuleAdd.rule)
            try control.mutate { model in model.addRule(rule, toSecurityGroup: id) }
        } else if request.hasSgRuleDel {
            let rule = try FirewallRule(proto: request.sgRuleDel.rule)
            try control.mutate { model in model.deleteRule(rule, fromSecurityGroup: request.sgRuleDel.sgID) }
        } else if request.hasSgRuleList {
            response.sgRuleList = try control.model.securityGroup(id: request.sgRuleList).rules.map(\.proto)
        } else if request.hasSgMemberAdd {
            let id = try SecurityGroup.id(sgID: request.sgMemberAdd.sgID)
            let address = try Self.parseMember(request.sgMemberAdd.member)
            try control.mutate { model in model.addMember(address, toSecurityGroup: id) }
        } else if request.hasSgMemberDel {
            let address = try Self.parseMember(request.sgMemberDel.member)
            try control.mutate { model in model.deleteMember(address, fromSecurityGroup: request.sgMemberDel.sgID) }
        } else if request.hasSgMemberList {
            response.sgMemberList = try control.model.securityGroup(id: request.sgMemberList).members.map(\.description)
        } else if request.hasAppStatus {
            response.appStatus.startDate = control.startDate
            response.appStatus.currentDate = UInt64(Date().timeIntervalSince1970)
            response.appStatus.requestCounter = control.requestCounter
            response.appStatus.graphDot = control.graphDOT
            if let global = control.runtime?.globalCounters() { response.appStatus.connections = global.connections }
            if let capacity = control.runtime?.connectionCapacity {
                response.appStatus.connectionCapacity = UInt64(capacity)
            }
            if let pause = control.runtime?.longestAdoptionNanoseconds {
                response.appStatus.longestAdoptionUs = pause / 1000
            }
            if let pause = control.runtime?.lastAdoptionNanoseconds { response.appStatus.lastAdoptionUs = pause / 1000 }
        } else if request.hasAppQuit {
            Log.info("API: app_quit received, stopping")
            quit = true
        } else if request.hasAppConfig {
            if request.appConfig.hasLogLevel {
                guard let level = Log.Level(name: request.appConfig.logLevel) else {
                    throw APIError.badLogLevel("log_level must be one of none, error, warning, info, debug")
                }
                Log.level = level
            }
        } else if request.hasNicFirewall {
            let id = request.nicFirewall
            guard let nic = control.reconciler.snapshot.nics[id] else { throw .nicNotFound(id) }
            if nic.bypassFiltering {
                response.nicFirewall = ["bypass filtering: no firewall, no anti-spoofing"]
            } else {
                response.nicFirewall = (nic.firewall ?? .empty).describe()
            }
        } else if request.hasSgDetails {
            let id = request.sgDetails
            if id.isEmpty {
                response.sgDetails = control.model.securityGroups.values.sorted { $0.id < $1.id }.map(\.proto)
            } else {
                response.sgDetails = [try control.model.securityGroup(id: id).proto]
            }
        } else {
            throw APIError.emptyRequest
        }
    }

    private static func parseMember(_ text: String) throws(APIError) -> IPAddress {
        guard let address = IPAddress(text) else { throw .badIP("member '\(text)' is not an IP address") }
        return address
    }
}
