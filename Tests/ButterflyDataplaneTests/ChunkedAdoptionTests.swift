import HashTreeCollections
import Testing

@testable import ButterflyDataplane

/// A change that reaches many NICs is adopted a chunk of NICs per pass, so the worker never
/// pauses long; the version counts as adopted only once every NIC switched, and a newer update
/// arriving halfway takes over what was left.
@Suite struct ChunkedAdoptionTests {
    static let host = HostConfig(vtepAddress: nil, socketDirectory: "/tmp", nicMTU: nil, offloads: false)

    static func nics(_ count: Int, vni: UInt32) -> TreeDictionary<String, NICConfig> {
        var nics: TreeDictionary<String, NICConfig> = [:]
        for index in 0..<count {
            let id = "n\(index)"
            nics[id] = NICConfig(
                id: id,
                mac: MACAddress(value: 0x5254_0000_0000 | UInt64(index)),
                vni: vni,
                ips: [],
                kind: .bench,
                path: "",
                ipAntiSpoof: false,
                bypassFiltering: false,
                securityGroups: [],
                packetTracePath: nil,
                sniffTarget: nil
            )
        }
        return nics
    }

    /// A worker adopting 8 NICs a pass, running 40 NICs in VNI 1 (version 1), and its config.
    static func workerWithFortyNICs() -> (Worker, DataplaneConfig) {
        var settings = Worker.Settings()
        settings.adoptionChunk = 8
        let worker = Worker(settings: settings, host: Self.host)
        var config = DataplaneConfig(host: Self.host)
        config.nics = Self.nics(40, vni: 1)
        config.version = 1
        worker.publish(DataplaneUpdate(config: config, attachments: [:]))
        worker.runOnce()
        return (worker, config)
    }

    @Test func manyChangedNICsAreAdoptedInChunksThenTheVersionCounts() {
        var (worker, config) = Self.workerWithFortyNICs()
        #expect(worker.adoptedVersion == 1)

        // Every NIC moves to VNI 2: five chunks of eight.
        config.nics = Self.nics(40, vni: 2)
        config.version = 2
        worker.publish(DataplaneUpdate(config: config, attachments: [:], changedNICs: Array(config.nics.keys)))
        worker.adoptPending()
        #expect(worker.adoptedVersion == 1, "one chunk adopted, not the version")
        #expect(worker.adopting?.remaining.count == 32)
        // A newer update (NIC n0 goes) takes over with what was left: n0 joins the queue unless
        // it is still in it (the first chunk's NICs follow the hash order of the ids).
        let stillQueued = worker.adopting?.remaining.contains("n0") == true
        config.nics["n0"] = nil
        config.version = 3
        worker.publish(DataplaneUpdate(config: config, attachments: [:], changedNICs: ["n0"]))
        worker.adoptPending()
        #expect(worker.adopting?.remaining.count == (stillQueued ? 24 : 25))
        while worker.adopting != nil { worker.continueAdoption() }
        #expect(worker.adoptedVersion == 3)
        #expect(worker.slotByID["n0"] == nil)
        #expect(worker.switches.index(of: 1) == -1, "no NIC left in VNI 1")
        for index in 1..<40 {
            let slot = worker.slotByID["n\(index)"]!
            #expect(worker.slots[slot]!.config.vni == 2)
        }
        #expect(worker.lastAdoptionNanoseconds > 0)
    }

    /// An orchestrator loading rules publishes a change per rule, each naming the group's NICs:
    /// a NIC waiting to be adopted is adopted once, however many changes named it. Queued
    /// twice per change, 10,000 rules on groups of 90 NICs kept a worker of 9,600 NICs busy
    /// for minutes after the load (999 ticks in 10 idle seconds).
    @Test func aNICNamedByManyChangesIsAdoptedOnce() {
        var (worker, config) = Self.workerWithFortyNICs()
        let everyNIC = Array(config.nics.keys)
        for version in 2...101 {
            config.version = UInt64(version)
            worker.publish(DataplaneUpdate(config: config, attachments: [:], changedNICs: everyNIC + everyNIC))
        }
        worker.adoptPending()
        #expect(worker.adopting?.remaining.count == 32, "40 NICs, one chunk of 8 adopted")
        // More changes while the adoption runs: the NICs still queued are not queued again,
        // those already adopted are (they must see the newer configuration).
        for version in 102...111 {
            config.version = UInt64(version)
            worker.publish(DataplaneUpdate(config: config, attachments: [:], changedNICs: everyNIC))
        }
        worker.adoptPending()
        #expect(worker.adopting?.remaining.count == 32, "the 8 adopted NICs queued again, one chunk adopted")
        var chunks = 0
        while worker.adopting != nil {
            worker.continueAdoption()
            chunks += 1
        }
        #expect(chunks == 4)
        #expect(worker.adoptedVersion == 111)
    }

    /// The changes of one API request are published with the same configuration version; a
    /// wait for a removed NIC's port must cover the update that removed it, not an earlier one
    /// of the same version (the port closer closes the port's fd once the wait returns).
    @Test func aWaitCoversItsOwnPublicationNotAnEarlierOneOfTheSameVersion() {
        var (worker, config) = Self.workerWithFortyNICs()
        config.version = 2
        config.nics["n1"]!.vni = 2
        let first = worker.publish(DataplaneUpdate(config: config, attachments: [:], changedNICs: ["n1"]))
        worker.adoptPending()
        #expect(worker.adoptedVersion == 2)
        #expect(worker.waitForAdoption(ofPublication: first, timeoutMilliseconds: 0))
        // Same version, a NIC removed: not adopted until the worker has taken it.
        config.nics["n2"] = nil
        let second = worker.publish(DataplaneUpdate(config: config, attachments: [:], changedNICs: ["n2"]))
        #expect(second > first)
        #expect(!worker.waitForAdoption(ofPublication: second, timeoutMilliseconds: 0), "n2 is still in a slot")
        #expect(worker.slotByID["n2"] != nil)
        worker.adoptPending()
        #expect(worker.waitForAdoption(ofPublication: second, timeoutMilliseconds: 0))
        #expect(worker.slotByID["n2"] == nil)
    }
}
