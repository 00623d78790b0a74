import ButterflyProtocol

/// The optional state file (`--state-file PATH`): the model survives restarts.
///
/// Two files: `PATH`, a snapshot of the whole model (`StateFile`), and `PATH.journal`, the
/// changes applied since (`StateJournal`). A change appends one record and fsyncs it before
/// the API replies: its cost does not grow with the model. When the journal outgrows the
/// snapshot (and 1 MiB), the store compacts: it writes the next snapshot generation
/// atomically, then starts the journal of that generation.
///
/// ```
///  start:   snapshot(G) + journal(G) ─► replay ─► model ─► compact ─► snapshot(G+1), journal(G+1) empty
///  change:  journal(G).append(requests); fsync; reply
///  crash between the two writes of a compaction: snapshot(G+1) + stale journal(G) ─► journal ignored
/// ```
///
/// Anything unreadable or malformed stops the daemon with the reason; files are never silently
/// replaced. Only a torn last journal record — a change that was never acknowledged — is
/// dropped, with a warning.
public final class StateStore {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    public let snapshot: StateFile
    public let journalPath: String
    private var generation: UInt64 = 0
    private var journal: StateJournal?
    private var snapshotBytes = 0
    /// Compaction threshold floor: small journals are cheaper to keep than to fold.
    let minimumCompactionBytes: Int

    public init(path: String, minimumCompactionBytes: Int = 1 << 20) {
        snapshot = StateFile(path: path)
        journalPath = path + ".journal"
        self.minimumCompactionBytes = minimumCompactionBytes
    }

    public var path: String { snapshot.path }

    /// The requests to replay, in order: the snapshot's, then the journal's.
    public func load() throws(Failure) -> (messages: [Proto_Message], tornTail: Bool) {
        let saved = try snapshot.load()
        generation = saved?.generation ?? 0
        var messages = saved?.messages.messages ?? []
        var torn = false
        if let journal = try StateJournal.load(path: journalPath) {
            if journal.generation == generation {
                for record in journal.records { messages += record.messages }
                torn = journal.tornTail
            } else if journal.generation > generation {
                throw Failure(
                    "journal \(journalPath) (generation \(journal.generation)) is newer than state file \(path) (generation \(generation))"
                )
            }
        }
        return (messages, torn)
    }

    /// Writes the next snapshot generation and starts its empty journal.
    public func compact(_ model: Model) throws(Failure) {
        generation += 1
        snapshotBytes = try snapshot.save(model, generation: generation)
        journal = nil
        journal = try StateJournal(path: journalPath, generation: generation)
    }

    /// Makes one API call's applied requests durable.
    public func record(_ requests: [MessageV0.Request], model: Model) throws(Failure) {
        guard let journal else {
            try compact(model)
            return
        }
        try journal.append(Proto_Messages(requests: requests))
        if journal.bytes > max(minimumCompactionBytes, snapshotBytes) {
            try compact(model)
        }
    }
}
