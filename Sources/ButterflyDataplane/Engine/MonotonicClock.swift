#if canImport(Glibc)
    import Glibc
#endif

/// The one clock the daemon measures intervals with (CLOCK_MONOTONIC: never jumps with the
/// wall clock), in the units its users count in. Before, the worker, the BENCH port, the API
/// loop and the vhost-user service each kept their own copy.
public enum MonotonicClock {
    @inline(__always)
    static func read() -> timespec {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return time
    }

    public static func nanoseconds() -> UInt64 {
        let time = read()
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    public static func milliseconds() -> Int64 {
        let time = read()
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }

    public static func seconds() -> Double {
        let time = read()
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
