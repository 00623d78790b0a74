import CButterflyLinux

#if canImport(Glibc)
    import Glibc
#endif

/// A guest's memory as the front-end described it (SET_MEM_TABLE): up to 8 regions, each
/// mapped `MAP_SHARED` from the file descriptor that came with it (memfd or hugetlbfs).
///
/// ```
///  region i:  guest physical [gpa, gpa+size)  ── front-end VA [uva, uva+size)
///             fd ─ mmap(0, mmap_offset+size) ─ host pointer = base + mmap_offset
/// ```
///
/// Descriptors carry guest-physical addresses; ring addresses (SET_VRING_ADDR) are front-end
/// virtual addresses. Both translate here, and only a range that lies entirely inside one
/// region translates: everything else is `nil`, the caller's cue that the guest is hostile.
public final class GuestMemory {
    public static let maximumRegions = 8

    public struct RegionDescription: Equatable, Sendable {
        public var guestPhysical: UInt64
        public var size: UInt64
        public var userAddress: UInt64
        public var mmapOffset: UInt64

        public init(guestPhysical: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
            self.guestPhysical = guestPhysical
            self.size = size
            self.userAddress = userAddress
            self.mmapOffset = mmapOffset
        }
    }

    struct Region {
        var guestPhysical: UInt64
        var userAddress: UInt64
        var size: UInt64
        /// Host address of guest-physical `guestPhysical`.
        var host: UnsafeMutableRawPointer
        /// What munmap needs.
        var mapping: UnsafeMutableRawPointer
        var mappingLength: Int
        /// Its slot in the SIGBUS guard (guest_memory_guard.h).
        var guardSlot: Int32
    }

    let regions: [Region]
    /// The same regions for `translate`, which runs for every descriptor: walking a Swift
    /// array there retains and releases its storage on each call.
    private let table: UnsafeMutablePointer<Region>
    private let regionCount: Int

    /// Maps `descriptions` from `fds` (one each, same order). Closes every fd, mapped or not;
    /// on any error nothing stays mapped.
    public init(_ descriptions: [RegionDescription], fds: [Int32]) throws(VhostUserError) {
        defer { for fd in fds { close(fd) } }
        guard descriptions.count == fds.count else {
            throw .badDescriptors(request: VhostUserRequest.setMemTable, expected: descriptions.count, got: fds.count)
        }
        guard (1...Self.maximumRegions).contains(descriptions.count) else {
            throw .badMemory("\(descriptions.count) regions")
        }
        for (index, region) in descriptions.enumerated() {
            guard region.size > 0 else { throw .badMemory("region \(index) is empty") }
            // No range may wrap around, nor be larger than the address space can map.
            let (physicalEnd, overflowsPhysical) = region.guestPhysical.addingReportingOverflow(region.size)
            let (userEnd, overflowsUser) = region.userAddress.addingReportingOverflow(region.size)
            let (mapped, overflowsMapping) = region.mmapOffset.addingReportingOverflow(region.size)
            guard !overflowsPhysical, !overflowsUser, !overflowsMapping, mapped <= UInt64(Int.max) else {
                throw .badMemory("region \(index) wraps around")
            }
            for other in descriptions[..<index] {
                let otherPhysicalEnd = other.guestPhysical &+ other.size
                let otherUserEnd = other.userAddress &+ other.size
                if region.guestPhysical < otherPhysicalEnd && other.guestPhysical < physicalEnd {
                    throw .badMemory("region \(index) overlaps another in guest-physical space")
                }
                if region.userAddress < otherUserEnd && other.userAddress < userEnd {
                    throw .badMemory("region \(index) overlaps another in front-end address space")
                }
            }
        }
        var mapped: [Region] = []
        for (index, region) in descriptions.enumerated() {
            let length = Int(region.mmapOffset + region.size)
            // The file must hold the whole range: a mapping past its end faults (SIGBUS) on access.
            var status = stat()
            guard fstat(fds[index], &status) == 0 else {
                Self.unmap(mapped)
                throw .badMemory("region \(index): its descriptor cannot be examined")
            }
            let isRegular = status.st_mode & S_IFMT == S_IFREG
            guard isRegular, status.st_size >= length else {
                Self.unmap(mapped)
                throw .badMemory("region \(index): its file is not a regular file of at least \(length) bytes")
            }
            // Mapped, guarded and unmapped in whole pages of the file's own size (hugetlbfs: a
            // huge page), or munmap and the guard's replacement mapping would fail.
            var fileSystem = statfs()
            let pageSize = fstatfs(fds[index], &fileSystem) == 0 ? max(Int(fileSystem.f_bsize), 4096) : 4096
            let mappingLength = (length + pageSize - 1) / pageSize * pageSize
            let pointer = mmap(nil, mappingLength, PROT_READ | PROT_WRITE, MAP_SHARED, fds[index], 0)
            guard let pointer, pointer != MAP_FAILED else {
                Self.unmap(mapped)
                throw .badMemory("region \(index): mmap of \(length) bytes failed: \(String(cString: strerror(errno)))")
            }
            // The front-end may still shrink the file: a fault in the mapping must not kill us.
            let guardSlot = cbutterfly_guest_memory_guard(pointer, mappingLength)
            guard guardSlot >= 0 else {
                munmap(pointer, mappingLength)
                Self.unmap(mapped)
                throw .badMemory("region \(index): too many guest memory mappings in this daemon")
            }
            mapped.append(
                Region(
                    guestPhysical: region.guestPhysical,
                    userAddress: region.userAddress,
                    size: region.size,
                    host: pointer + Int(region.mmapOffset),
                    mapping: pointer,
                    mappingLength: mappingLength,
                    guardSlot: guardSlot
                )
            )
        }
        regions = mapped
        regionCount = mapped.count
        table = .allocate(capacity: mapped.count)
        table.initialize(from: mapped, count: mapped.count)
    }

    deinit {
        Self.unmap(regions)
        table.deallocate()
    }

    private static func unmap(_ regions: [Region]) {
        for region in regions {
            cbutterfly_guest_memory_unguard(region.guardSlot)
            munmap(region.mapping, region.mappingLength)
        }
    }

    /// True once the front-end shrank a region's file under us: an access faulted, the region
    /// now reads as zeros, and the front-end must be dropped.
    public var poisoned: Bool {
        regions.contains { cbutterfly_guest_memory_poisoned($0.guardSlot) != 0 }
    }

    /// The host address of guest-physical `[address, address + length)`, or `nil` unless the
    /// whole range is inside one region.
    public func translate(guestPhysical address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        translate(address, length: length, byGuestPhysical: true)
    }

    /// The host address of front-end virtual `[address, address + length)` (ring addresses).
    public func translate(userAddress address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        translate(address, length: length, byGuestPhysical: false)
    }

    @inline(__always)
    private func translate(_ address: UInt64, length: UInt64, byGuestPhysical: Bool) -> UnsafeMutableRawPointer? {
        for index in 0..<regionCount {
            let region = table[index]
            let start = byGuestPhysical ? region.guestPhysical : region.userAddress
            guard address >= start else { continue }
            let offset = address &- start
            guard offset < region.size, length <= region.size &- offset else { continue }
            return region.host + Int(offset)
        }
        return nil
    }
}
