import Benchmark
import DataplaneFixtures

#if canImport(Glibc)
    import Glibc
#endif

// Every scenario (see `ScenarioKind`) at 64 B and 1500 B. One benchmark iteration is one
// `Scenario.run()`: exactly 1,000 packets, so with the `.kilo` scaling factor ordo-one's scaled
// throughput is packets per second and its scaled wall clock is time per packet. Its scaled
// malloc column is rounded to whole mallocs per packet, so scripts/bench-dataplane reads the raw
// count per run (per 1,000 packets) instead. Fixtures are built, warmed up and checked in
// `setup` (`Scenarios.make`), outside the measurement; ordo-one's own warm-up iterations then
// run before the measured ones.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .mallocCountTotal],
        warmupIterations: 500,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )

    // Control: shows that the allocation counter sees an allocation made inside a run (it
    // must report one malloc per 1,000 packets, 0.001 per packet).
    Benchmark("control-1-malloc-per-run") { _ in
        let memory = malloc(64)
        blackHole(memory)
        free(memory)
    }

    for kind in ScenarioKind.allCases {
        for size in FrameSize.allCases where kind.runs(at: size) {
            Benchmark(
                "\(kind.rawValue) \(size.label)",
                closure: { _, scenario in blackHole(scenario.run()) },
                setup: { Scenarios.make(kind, size: size) }
            )
        }
    }
}
