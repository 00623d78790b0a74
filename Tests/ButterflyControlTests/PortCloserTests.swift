import ButterflyDataplane
import ButterflyPacket
import ButterflyPorts
import Foundation
import Testing

@testable import ButterflyControl

#if canImport(Glibc)
    import Glibc
#endif

/// The closer pays for closing removed taps (an RCU grace period each, 16–30 ms), not whichever
/// thread drops a tap's last reference: `nic_del` on a host of 4,096 taps had a p99 of 17–32 ms
/// because the API thread often dropped it (its locals, the worker's previous update).
@Suite(.serialized)
struct PortCloserTests {
    init() throws {
        guard getuid() == 0 else { throw CloserTestError.needsRoot }
    }

    enum CloserTestError: Error { case needsRoot }

    static func interfaceExists(_ name: String) -> Bool {
        FileManager.default.fileExists(atPath: "/sys/class/net/\(name)")
    }

    @Test func aTapNoWorkerUsesIsClosedByTheCloserWhileOtherReferencesRemain() throws {
        let name = "btpc\(getpid() % 100_000)"
        let tap = try TapPort(name: name, mac: nil, mtu: nil)
        let attachment = NICAttachment(nicID: "nic", port: tap)
        let closer = PortCloser()
        closer.close([attachment], unused: true)
        closer.wait()
        // `tap` and `attachment` still hold the port: the closer closed it all the same.
        #expect(tap.fileDescriptor == -1)
        #expect(!Self.interfaceExists(name), "the interface went with the closer's close")
        withExtendedLifetime(attachment) {}
    }

    @Test func aTapAWorkerMayStillUseClosesOnlyWithItsLastReference() throws {
        let name = "btpd\(getpid() % 100_000)"
        var tap: TapPort? = try TapPort(name: name, mac: nil, mtu: nil)
        let closer = PortCloser()
        closer.close([NICAttachment(nicID: "nic", port: tap!)], unused: false)
        closer.wait()
        #expect(tap!.fileDescriptor >= 0, "a late worker could still read it: left open")
        #expect(Self.interfaceExists(name))
        tap = nil
        #expect(!Self.interfaceExists(name))
    }
}
