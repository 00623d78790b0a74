import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The handshake for port updates: a port whose state changes while it runs (a vhost-user NIC's
/// rings start and stop, its memory table changes) has the change made on the worker thread,
/// between two batches, while the control thread waits. The packet path takes no lock; the
/// control thread knows, when the call returns, that the worker no longer uses what it replaced
/// (a ring's memory can then be unmapped, GET_VRING_BASE answered).
extension Worker {
    /// Runs `body` on the worker thread between batches and returns its result. Runs it on the
    /// calling thread when no worker thread runs (not started, stopped, or driven by `runOnce`).
    /// One caller at a time (the control thread).
    public func onWorkerThread(_ body: @escaping () -> UInt64) -> UInt64 {
        // Already on the worker (a port stopping its own rings): waiting for ourselves would
        // never end.
        if isWorkerThread { return body() }
        let task = PortTask(body)
        portTask.withLock { $0 = task }
        portTaskPending.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        while true {
            if task.state.load(ordering: .acquiring) == PortTask.done { break }
            if !threadRunning.load(ordering: .acquiring), task.claim() {
                task.run()
                break
            }
            usleep(50)
        }
        portTask.withLock { if $0 === task { $0 = nil } }
        return task.result
    }

    /// Worker thread: runs the waiting task, if the caller has not taken it back.
    func runPortTask() {
        portTaskPending.store(false, ordering: .relaxed)
        guard let task = portTask.withLock({ $0 }), task.claim() else { return }
        task.run()
        // A task starts or stops rings: every port asks for its notifications again before the
        // worker next sleeps.
        rearmAllSleepHooks = true
    }
}

/// One closure for the worker thread, claimed by exactly one thread.
final class PortTask: @unchecked Sendable {
    // Safe: `body` and `result` are touched only by the thread that won `claim()`, and
    // `result` is read after `state` says done (acquire/release).
    static let pending = 0
    static let taken = 1
    static let done = 2
    let state = Atomic<Int>(PortTask.pending)
    private let body: () -> UInt64
    private(set) var result: UInt64 = 0

    init(_ body: @escaping () -> UInt64) { self.body = body }

    func claim() -> Bool {
        state.compareExchange(expected: Self.pending, desired: Self.taken, ordering: .acquiringAndReleasing).exchanged
    }

    func run() {
        result = body()
        state.store(Self.done, ordering: .releasing)
    }
}
