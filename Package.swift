// swift-tools-version:6.1
//
// Butterfly for Swift: a per-host virtual network daemon (`butterflyd`) and its CLI (`butterfly`).
// The module graph mirrors the architecture (docs/ARCHITECTURE.md):
//
//   ButterflyProtocol ─┐
//   ButterflyDataplane ┼─► ButterflyControl ─► butterflyd
//                      └─► ButterflyCLI     ─► butterfly
//
// Dependency direction: data plane never imports the control plane, ZeroMQ or protobuf.
import PackageDescription

let package = Package(
    name: "Butterfly",
    products: [
        .executable(name: "butterflyd", targets: ["butterflyd"]),
        .executable(name: "butterfly", targets: ["butterfly"]),
        // For the separate benchmark package (Benchmarks/Dataplane), which depends on this one by path.
        .library(name: "ButterflyPacket", targets: ["ButterflyPacket"]),
        .library(name: "ButterflyDataplane", targets: ["ButterflyDataplane"]),
        .library(name: "ButterflyPorts", targets: ["ButterflyPorts"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
    ],
    targets: [
        // C libraries found by pkg-config (Debian: libzmq3-dev, libssl-dev).
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq", providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CLibCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),

        // Linux headers and kernel structs the Swift overlay lacks (signalfd; later tun, packet, vhost).
        .target(name: "CButterflyLinux"),

        // Wire schema: the .proto files and the Swift code generated from them (committed).
        .target(
            name: "ButterflyProtocol",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            exclude: ["Protos"]
        ),

        // Packet memory, batches, header access, checksums: no I/O, no Foundation.
        .target(name: "ButterflyPacket"),

        // Data plane: configuration snapshots the control plane publishes, and the engine.
        .target(
            name: "ButterflyDataplane",
            dependencies: [
                "ButterflyPacket", "CButterflyLinux",
                .product(name: "HashTreeCollections", package: "swift-collections"),
            ]
        ),

        // Ports: tap, AF_PACKET underlay (later vhost-user); implement the data plane's PacketPort.
        .target(name: "ButterflyPorts", dependencies: ["ButterflyPacket", "ButterflyDataplane", "CButterflyLinux"]),

        // Control plane: model, validation, reconciler, API, ZeroMQ server, encryption, config.
        .target(
            name: "ButterflyControl",
            dependencies: [
                "CZeroMQ", "CLibCrypto", "CButterflyLinux", "ButterflyProtocol", "ButterflyDataplane", "ButterflyPorts",
                "ButterflyPacket",
                .product(name: "OrderedCollections", package: "swift-collections"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "HashTreeCollections", package: "swift-collections"),
            ]
        ),

        // The CLI's command tree (a library so that tests can drive it in-process too).
        .target(
            name: "ButterflyCLI",
            dependencies: [
                "ButterflyControl", "ButterflyProtocol",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),

        .executableTarget(name: "butterflyd", dependencies: ["ButterflyControl"]),
        .executableTarget(name: "butterfly", dependencies: ["ButterflyCLI"]),

        // API requests/s and latency against a running daemon (scripts/bench-api).
        .executableTarget(
            name: "butterfly-api-bench",
            dependencies: ["ButterflyControl", "ButterflyProtocol"],
            path: "Benchmarks/APIBenchmark"
        ),

        .testTarget(
            name: "ButterflyControlTests",
            dependencies: ["ButterflyControl", "ButterflyProtocol", "ButterflyDataplane", "ButterflyPorts"]
        ),
        // Frames built field by field, shared by the packet and data-plane tests.
        .target(name: "ButterflyTestSupport", path: "Tests/ButterflyTestSupport"),
        .testTarget(name: "ButterflyPacketTests", dependencies: ["ButterflyPacket", "ButterflyTestSupport"]),
        .testTarget(
            name: "ButterflyDataplaneTests",
            dependencies: [
                "ButterflyDataplane", "ButterflyPacket", "ButterflyTestSupport",
                .product(name: "HashTreeCollections", package: "swift-collections"),
            ]
        ),
        .testTarget(
            name: "ButterflyPortsTests",
            dependencies: ["ButterflyPorts", "ButterflyPacket", "ButterflyDataplane", "CButterflyLinux"]
        ),
        .testTarget(
            name: "ButterflyCLITests",
            dependencies: ["ButterflyCLI", "ButterflyControl", "ButterflyProtocol"]
        ),
        .testTarget(
            name: "ButterflyIntegrationTests",
            dependencies: [
                "ButterflyControl", "ButterflyProtocol", "CButterflyLinux",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
