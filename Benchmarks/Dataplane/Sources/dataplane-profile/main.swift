import DataplaneFixtures

#if canImport(Glibc)
    import Glibc
#endif

// Runs one scenario in a loop on this thread, for profilers that want a plain process
// (`valgrind --tool=callgrind`, `perf record`), and prints packets per second from
// clock_gettime. Usage: dataplane-profile SCENARIO [64B|1500B] [MILLION-PACKETS]
let arguments = CommandLine.arguments

func seconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

// `dataplane-profile compile [RULES]`: the time to compile one NIC's group of RULES rules.
if arguments.count >= 2 && arguments[1] == "compile" {
    let rules = arguments.count >= 3 ? Int(arguments[2]) ?? 10_000 : 10_000
    let best = CompileTiming.best(rules: rules, clock: seconds)
    print("compile \(rules) rules: \(best * 1000) ms (best of 5)")
    exit(0)
}
guard arguments.count >= 2, let kind = ScenarioKind(rawValue: arguments[1]) else {
    let names = ScenarioKind.allCases.map(\.rawValue).joined(separator: "|")
    print("usage: dataplane-profile \(names) [64B|1500B] [MILLION-PACKETS]")
    exit(2)
}
let size = arguments.count >= 3 ? FrameSize.allCases.first { $0.label == arguments[2] } : .small
guard let size else {
    print("frame size is 64B or 1500B")
    exit(2)
}
let millions = arguments.count >= 4 ? Double(arguments[3]) ?? 10 : 10
let runs = max(1, Int(millions * 1_000_000) / Scenarios.packetsPerRun)


let scenario = Scenarios.make(kind, size: size)
var expected = 0
let start = seconds()
for _ in 0..<runs { expected &+= scenario.run() }
let elapsed = seconds() - start
let packets = runs * Scenarios.packetsPerRun
precondition(expected == packets, "only \(expected) of \(packets) packets took the expected way")
let mpps = Double(packets) / elapsed / 1e6
print("\(kind.rawValue) \(size.label): \(packets) packets in \(elapsed) s = \(mpps) Mpps, \(1000 / mpps) ns/packet")
