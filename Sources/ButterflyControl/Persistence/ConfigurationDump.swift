import ButterflyProtocol
import SwiftProtobuf

/// The text-format `Messages` that recreates a configuration when sent as a request: one
/// `nic_add` per NIC, then one `sg_add` per security group (NICs first, as the original's
/// `butterfly dump` did; order does not matter to the daemon since unknown group ids are
/// tolerated). Both `butterfly dump` and the state file use this form.
public enum ConfigurationDump {
    public static func messages(nics: [MessageV0.Nic], securityGroups: [MessageV0.Sg]) -> Proto_Messages {
        var messages = Proto_Messages()
        for var nic in nics {
            nic.clearPath()  // output only
            messages.messages.append(wrap { $0.nicAdd = nic })
        }
        for group in securityGroups {
            messages.messages.append(wrap { $0.sgAdd = group })
        }
        return messages
    }

    public static func text(nics: [MessageV0.Nic], securityGroups: [MessageV0.Sg]) -> String {
        messages(nics: nics, securityGroups: securityGroups).textFormatString()
    }

    private static func wrap(_ fill: (inout MessageV0.Request) -> Void) -> Proto_Message {
        var message = Proto_Message()
        message.revision = ButterflyRevision.current
        fill(&message.message0.request)
        return message
    }
}
