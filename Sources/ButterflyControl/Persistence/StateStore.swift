import ButterflyProtocol
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

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
///  change:  journal(G).append(requests); fsync; reply        (failure: cut off, reply an error)
///  crash between the two writes of a compaction: snapshot(G+1) + stale journal(G) ─► journal ignored
/// ```
///
/// `record` either makes the change durable or throws, leaving the files as they were: the
/// caller then rolls the change back (ControlPlane). Anything unreadable or damaged stops the
/// daemon with the file, the offset and what to do; files are never silently replaced. Only a
/// torn last journal record — a change that was never acknowledged — is dropped, and reported.
/// `recover()` (`butterflyd --recover-state`) keeps every record that still checks and sets
/// the damaged files aside.
public final class StateStore {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    static let recoveryAdvice =
        "To start with every intact record, run butterflyd once with --recover-state: the damaged file is set aside"
        + " as <file>.damaged-<time> (docs/OPERATIONS.md, State file)."

    public let snapshot: StateFile
    public let journalPath: String
    private var generation: UInt64 = 0
    private(set) var journal: StateJournal?
    private var snapshotBytes = 0
    /// Compaction threshold floor: small journals are cheaper to keep than to fold.
    let minimumCompactionBytes: Int

    public init(path: String, minimumCompactionBytes: Int = 1 << 20) {
        snapshot = StateFile(path: path)
        journalPath = path + ".journal"
        self.minimumCompactionBytes = minimumCompactionBytes
    }

    public var path: String { snapshot.path }

    /// What `load` found.
    public struct Loaded {
        public var messages: [Proto_Message]
        /// Offset of a dropped torn last journal record.
        public var tornTailOffset: Int?
        public var tornTail: Bool { tornTailOffset != nil }
    }

    /// The requests to replay, in order: the snapshot's, then the journal's.
    public func load() throws(Failure) -> Loaded {
        let saved = try snapshot.load()
        generation = saved?.generation ?? 0
        var loaded = Loaded(messages: saved?.messages.messages ?? [], tornTailOffset: nil)
        if let journal = try StateJournal.load(path: journalPath) {
            if journal.generation == generation {
                for record in journal.records { loaded.messages += record.messages }
                loaded.tornTailOffset = journal.tornTailOffset
            } else if journal.generation > generation {
                throw Failure(
                    "journal \(journalPath) (generation \(journal.generation)) is newer than state file \(path) (generation \(generation)). "
                        + Self.recoveryAdvice
                )
            }
        }
        return loaded
    }

    /// What `recover` kept, and the damaged files to set aside once it is saved.
    public struct Recovered {
        public var messages: [Proto_Message]
        /// Files that did not check, with their bytes as read: written aside by `setAside`
        /// after the recovered state is safely in a new snapshot (so a failure on the way
        /// loses nothing; that compaction replaces the files themselves).
        public var damaged: [(file: String, bytes: [UInt8])]
    }

    /// Every message that still checks, snapshot then journal.
    public func recover() throws(Failure) -> Recovered {
        var recovered = Recovered(messages: [], damaged: [])
        let saved = try snapshot.intactMessages()
        generation = saved?.generation ?? 0
        recovered.messages = saved?.messages ?? []
        if let bytes = saved?.damagedBytes { recovered.damaged.append((path, bytes)) }
        if let (journal, damaged) = try StateJournal.intactRecords(path: journalPath) {
            // A journal newer than the snapshot means the snapshot it belongs to is lost: its
            // records alone are still the best that is left.
            if journal.generation >= generation {
                for record in journal.records { recovered.messages += record.messages }
            }
            if damaged || journal.generation > generation { recovered.damaged.append((journalPath, journal.bytes)) }
        }
        return recovered
    }

    /// Keeps a damaged file's bytes as `<file>.damaged-<unix time>` (for inspection, never
    /// deleted). Called after `compact` saved what was recovered, with the bytes read before.
    public func setAside(_ file: String, bytes: [UInt8]) throws(Failure) -> String {
        let target = "\(file).damaged-\(Int(Date().timeIntervalSince1970))"
        try FileIO.writeAtomically(bytes, to: target)
        return target
    }

    /// Writes the next snapshot generation and starts its empty journal. On failure the
    /// previous snapshot and journal stay in force (a half-done compaction leaves the new
    /// snapshot with no journal: the next change starts one).
    public func compact(_ model: Model) throws(Failure) {
        let bytes = try snapshot.save(model, generation: generation + 1)
        // From here the new snapshot is in force: it holds every change, so a journal that
        // cannot be started only postpones appending (the next change compacts again).
        generation += 1
        snapshotBytes = bytes
        journal = nil
        do throws(Failure) {
            journal = try StateJournal(path: journalPath, generation: generation)
        } catch {
            Log.error("state: cannot start journal \(journalPath), the next change writes a new snapshot: \(error)")
        }
    }

    /// After a refused change, with `model` rolled back to what is saved: a journal that could
    /// not cut its failed record off may still hold it on disk, where a restart would replay a
    /// change that was refused. A new generation written now from `model` supersedes that
    /// journal (a journal of an older generation is ignored). If even that cannot be written,
    /// the window stays open until a later change manages to (`record` starts with it); the
    /// log says so.
    public func supersedeBrokenJournal(_ model: Model) {
        guard let journal, journal.broken else { return }
        do throws(Failure) {
            try compact(model)
        } catch {
            Log.error(
                "state: journal \(journalPath) may still hold the refused change and a new snapshot cannot be written"
                    + " either; until one can, a restart may replay it: \(error)"
            )
        }
    }

    /// Makes one API call's applied requests durable, or throws and leaves the saved state as
    /// it was. `model` already holds the changes.
    public func record(_ requests: [MessageV0.Request], model: Model) throws(Failure) {
        guard let journal, !journal.broken else {
            // No usable journal (first change, or an earlier failure): a whole new generation.
            try compact(model)
            return
        }
        try journal.append(Proto_Messages(requests: requests))
        if journal.bytes > max(minimumCompactionBytes, snapshotBytes) {
            // The change is already durable; a failed compaction only postpones the next one.
            do throws(Failure) {
                try compact(model)
            } catch {
                Log.error("state: cannot compact \(path), will retry: \(error)")
            }
        }
    }
}
