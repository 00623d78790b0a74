import ButterflyPacket
import CButterflyLinux
import HashTreeCollections
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Questions from the control plane about state only the worker may read (a NIC's tracked
/// connections), answered between two batches: the packet path never takes a lock for them.
extension Worker {
    /// Asks the worker thread about its state and waits for the answer (at most
    /// `timeoutMilliseconds`); `nil` when the worker did not answer in time. One question at a
    /// time (the control plane is one thread).
    public func ask(_ question: WorkerQuestion, timeoutMilliseconds: Int = 2000) -> WorkerAnswer? {
        questions.withLock { $0 = (question, nil) }
        questionPending.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        var waited = 0
        while waited < timeoutMilliseconds * 10 {
            if let answer = questions.withLock({ $0?.answer }) {
                questions.withLock { $0 = nil }
                return answer
            }
            usleep(100)
            waited += 1
        }
        questions.withLock { $0 = nil }
        return nil
    }

    func answerQuestion() {
        questionPending.store(false, ordering: .relaxed)
        guard let question = questions.withLock({ $0?.question }) else { return }
        let answer: WorkerAnswer
        switch question {
        case .connections(let nicID):
            if let slot = slotByID[nicID], let guest = slots[slot] {
                answer = .connections(connections.entries(ofZone: guest.zone, now: Self.monotonicSeconds()))
            } else {
                answer = .connections([])
            }
        }
        questions.withLock { state in
            if state != nil { state!.answer = answer }
        }
    }
}

/// What the control plane may ask the worker (`Worker.ask`).
public enum WorkerQuestion: Sendable {
    /// The tracked connections of a NIC.
    case connections(nicID: String)
}

public enum WorkerAnswer: Sendable {
    case connections([ConnectionEntry])
}
