import ButterflyProtocol

extension Proto_Messages {
    /// An envelope carrying one V0 request per message, at our revision, optionally with
    /// message ids (matched by position).
    public init(requests: [MessageV0.Request], ids: [String]? = nil) {
        self.init()
        messages = requests.enumerated().map { index, request in
            var message = Proto_Message()
            message.revision = ButterflyRevision.current
            message.message0.request = request
            if let ids { message.message0.messageID = ids[index] }
            return message
        }
    }
}
