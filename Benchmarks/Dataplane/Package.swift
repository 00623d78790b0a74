// swift-tools-version:6.1
//
// In-process data-plane benchmarks (docs/PERFORMANCE.md, "Data plane: in-process"): packets per
// second and allocations per packet of each node and of a whole worker pass, measured with
// ordo-one/benchmark. A separate package so that CI never builds the benchmark harness.
//
//   DataplaneFixtures ─► DataplaneBenchmarks   (ordo-one: throughput, mallocs; scripts/bench-dataplane)
//                     └► dataplane-profile     (one scenario in a loop, for callgrind / perf)
import PackageDescription

let package = Package(
    name: "DataplaneBenchmarks",
    dependencies: [
        .package(name: "Butterfly", path: "../.."),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        // The malloc interposer counts allocations; the runtime interposer trait (ARC counts on
        // Swift 6.3) is left off: its package is not in the local mirror.
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Frames, synthetic ports and the scenarios both executables run.
        .target(
            name: "DataplaneFixtures",
            dependencies: [
                .product(name: "ButterflyPacket", package: "Butterfly"),
                .product(name: "ButterflyDataplane", package: "Butterfly"),
                .product(name: "ButterflyPorts", package: "Butterfly"),
                .product(name: "HashTreeCollections", package: "swift-collections"),
            ]
        ),
        .executableTarget(
            name: "DataplaneBenchmarks",
            dependencies: [
                "DataplaneFixtures",
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/DataplaneBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(name: "dataplane-profile", dependencies: ["DataplaneFixtures"]),
    ],
    swiftLanguageModes: [.v6]
)
