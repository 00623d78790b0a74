import ButterflyProtocol
import SwiftProtobuf

/// The text-format `Messages` that recreates a configuration when sent as a request: one
/// `nic_add` per NIC, then one `sg_add` per security group (NICs first, as the original's
/// `butterfly dump` did; order does not matter to the daemon since unknown group ids are
/// tolerated). Both `butterfly dump` and the state file use this form.
///
/// A dump holds what was given, not what the daemon filled in: packet trace settings that
/// `nic_details` marks as the daemon's defaults are left out, so a replay on a daemon with
/// another pid or another `-t` follows that daemon's defaults, and the text stays readable
/// by the original's CLI.
public enum ConfigurationDump {
    public static func messages(nics: [MessageV0.Nic], securityGroups: [MessageV0.Sg]) -> Proto_Messages {
        let nicRequests = nics.map { nic in
            MessageV0.Request.with {
                $0.nicAdd = nic
                $0.nicAdd.clearPath()  // output only
                if nic.packetTraceIsDefault { $0.nicAdd.clearPacketTrace() }
                if nic.packetTracePathIsDefault { $0.nicAdd.clearPacketTracePath() }
                $0.nicAdd.clearPacketTraceIsDefault()
                $0.nicAdd.clearPacketTracePathIsDefault()
            }
        }
        return Proto_Messages(requests: nicRequests + securityGroups.map { group in .with { $0.sgAdd = group } })
    }

    public static func text(nics: [MessageV0.Nic], securityGroups: [MessageV0.Sg]) -> String {
        messages(nics: nics, securityGroups: securityGroups).textFormatString()
    }
}
