import ButterflyPacket
import CButterflyLinux
import HashTreeCollections
import Synchronization
import Testing

@testable import ButterflyDataplane

#if canImport(Glibc)
    import Glibc
#endif

/// A port with sleep hooks (as vhost-user ports have), woken through an eventfd, counting what
/// the worker asks of it. Its counters are atomics: the worker thread writes, the test reads.
final class HookPort: PacketPort, @unchecked Sendable {
    // Safe: only the worker thread calls the port; the test reads the atomics.
    let name = "hook"
    let fileDescriptor: Int32 = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
    var portDrops: PortDropCounters { PortDropCounters() }
    let receives = Atomic<Int>(0)
    let wakes = Atomic<Int>(0)
    let rearms = Atomic<Int>(0)

    deinit { close(fileDescriptor) }

    var hasSleepHooks: Bool { true }

    func wake() {
        wakes.add(1, ordering: .relaxed)
        var drained: UInt64 = 0
        _ = read(fileDescriptor, &drained, 8)
    }

    func prepareToSleep() -> Bool {
        rearms.add(1, ordering: .relaxed)
        return false
    }

    func receive(into batch: PacketBatch, pool: PacketPool) -> Int {
        receives.add(1, ordering: .relaxed)
        return 0
    }

    func transmit(_ batch: PacketBatch, pool: PacketPool) -> Int {
        let count = batch.count
        batch.releaseAll(to: pool)
        return count
    }

    func kick() {
        var one: UInt64 = 1
        _ = write(fileDescriptor, &one, 8)
    }
}

/// The worker's own loop, asleep: with thousands of vhost-user NICs, a wake-up of one port must
/// not cost a visit to every port (each a cache miss or more), and neither must an adoption in
/// progress (a change reaching 9,000 NICs took 282 passes over every port: 0.6–2 s of CPU).
@Suite(.serialized)
struct SleepingWorkerTests {
    static let host = HostConfig(vtepAddress: nil, socketDirectory: "/tmp", nicMTU: nil, offloads: false)

    static func waitUntil(_ condition: () -> Bool) -> Bool {
        for _ in 0..<500 {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    @Test func aWakeUpRearmsOnlyThePortThatWokeAndAnAdoptionPollsNoPort() {
        let worker = Worker(host: Self.host)
        var config = DataplaneConfig(host: Self.host)
        var attachments: TreeDictionary<String, NICAttachment> = [:]
        var hooked: [String: HookPort] = [:]
        for index in 0..<200 {
            let id = "h\(index)"
            config.nics[id] = NICConfig(
                id: id,
                mac: MACAddress(value: 0x5254_0000_0000 | UInt64(index)),
                vni: 1,
                ips: [],
                kind: .bench,
                path: "",
                ipAntiSpoof: false,
                bypassFiltering: true,
                securityGroups: [],
                packetTracePath: nil,
                sniffTarget: nil
            )
            let port = HookPort()
            hooked[id] = port
            attachments[id] = NICAttachment(nicID: id, port: port)
        }
        config.version = 1
        worker.publish(DataplaneUpdate(config: config, attachments: attachments))
        worker.start()
        defer {
            worker.stop()
            worker.join()
        }
        let a = hooked["h0"]!
        let b = hooked["h1"]!
        // Asleep: every port was asked to notify once it was attached.
        #expect(Self.waitUntil { worker.adoptedVersion == 1 && b.rearms.load(ordering: .relaxed) >= 1 })
        usleep(100_000)
        let bRearms = b.rearms.load(ordering: .relaxed)
        let bReceives = b.receives.load(ordering: .relaxed)

        a.kick()
        #expect(Self.waitUntil { a.wakes.load(ordering: .relaxed) == 1 && a.rearms.load(ordering: .relaxed) >= 2 })
        usleep(50_000)
        #expect(b.rearms.load(ordering: .relaxed) == bRearms, "b did not wake: it is not asked again")
        #expect(b.receives.load(ordering: .relaxed) == bReceives, "nor polled")

        // A change naming every NIC, adopted 32 a chunk: the ports are not polled meanwhile.
        config.version = 2
        for id in hooked.keys { config.nics[id]!.vni = 2 }
        worker.publish(DataplaneUpdate(config: config, attachments: attachments, changedNICs: Array(hooked.keys)))
        #expect(Self.waitUntil { worker.adoptedVersion == 2 })
        #expect(b.receives.load(ordering: .relaxed) == bReceives, "an adoption makes no pass over the ports")
    }
}
