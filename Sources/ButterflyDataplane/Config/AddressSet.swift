/// A NIC's addresses of one family, for membership tests on the packet path: no allocation,
/// no hashing, no reference counting. Up to four addresses — what most NICs have — sit inline
/// and are compared in turn; a larger set is kept sorted and searched by bisection.
///
/// ```
///  count 0      count 1…4                      count > 4
///  (empty)      a b c d  (unused = a)          a…d unused, sorted: [x0 < x1 < … < xn]
/// ```
/// Addresses are 128-bit values as `FrameHeaders` reports them (IPv4 in the low 32 bits). A
/// set holds one family, so an IPv4 address never matches an IPv6 one with the same low bits.
public struct AddressSet: Sendable {
    @usableFromInline static var inlineCapacity: Int { 4 }

    public let count: Int
    @usableFromInline let a: UInt128
    @usableFromInline let b: UInt128
    @usableFromInline let c: UInt128
    @usableFromInline let d: UInt128
    /// Every address, ascending, when there are more than `inlineCapacity`; empty otherwise.
    @usableFromInline let sorted: [UInt128]

    /// Duplicates count once.
    public init(_ addresses: some Sequence<UInt128>) {
        let unique = Array(Set(addresses)).sorted()
        count = unique.count
        let first = unique.first ?? 0
        a = first
        b = unique.count > 1 ? unique[1] : first
        c = unique.count > 2 ? unique[2] : first
        d = unique.count > 3 ? unique[3] : first
        sorted = unique.count > Self.inlineCapacity ? unique : []
    }

    @inlinable
    public func contains(_ address: UInt128) -> Bool {
        if count <= Self.inlineCapacity {
            return count != 0 && (address == a || address == b || address == c || address == d)
        }
        var low = 0
        var high = sorted.count
        while low < high {
            let middle = (low &+ high) >> 1
            if sorted[middle] < address { low = middle &+ 1 } else { high = middle }
        }
        return low < sorted.count && sorted[low] == address
    }
}
