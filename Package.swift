// swift-tools-version:6.1
// AeroDB: a replicated Backend-as-a-Service appliance. See README.md and docs/ARCHITECTURE.md.
// Module graph (one way only): Kernel <- Replication <- Node -> BaaS -> Kernel.
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "aerodb",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "aerodb", targets: ["Node"]),
        .executable(name: "aerodb-crashtest", targets: ["CrashTests"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/swiftwasm/WasmKit.git", exact: "0.4.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),  // NIOHTTPTypes: S3's Expect: 100-continue handler
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),  // mutual TLS on the replication port (cluster CA)
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),  // X509: the cluster CA of `aerodb cluster init --tls`
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),  // SwiftASN1: IP addresses in certificates' SANs
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),  // the node's stop: signals, drain limit
    ],
    targets: [
        // C libraries from Debian packages, imported through small module maps.
        .systemLibrary(name: "CLiburing", pkgConfig: "liburing", providers: [.apt(["liburing-dev"])]),
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CNuma", providers: [.apt(["libnuma-dev"])]),
        .systemLibrary(name: "CArgon2", pkgConfig: "libargon2", providers: [.apt(["libargon2-dev"])]),
        .target(
            name: "Kernel",
            dependencies: ["CLiburing", "CZlib", "CNuma", .product(name: "CoreMetrics", package: "swift-metrics")],
            swiftSettings: strictSettings
        ),
        .target(
            name: "Replication",
            dependencies: [
                "Kernel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),  // ReplicationTLS
                .product(name: "NIOTLS", package: "swift-nio"),  // ReplicationTLS: the handshake's completion
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "BaaS",
            dependencies: [
                "Kernel", "CArgon2",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),  // RSA: RS256 id_tokens of OIDC providers
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "WasmKit", package: "WasmKit"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
            ],
            // The dashboard's static files, compiled into the binary (no resource bundle next to it): docs/DASHBOARD.md.
            resources: [.embedInCode("Dashboard/static")],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "Node",
            dependencies: [
                "Kernel", "Replication", "BaaS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "X509", package: "swift-certificates"),  // ClusterCA
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),  // ClusterCA: P-256 keys
                .product(name: "NIOSSL", package: "swift-nio-ssl"),  // the CLI's https:// with the cluster CA
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),  // StartCommand.serve: SIGTERM, the drain limit
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "CrashTests",
            dependencies: [
                "Kernel", "LiveCluster", "ClusterSim",
                "BaaS",  // BlobStore on the simulated disk (the disk harness's blob workload)
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "CrashTests",
            exclude: ["Live", "Sim"],
            swiftSettings: strictSettings
        ),
        // Real `aerodb` processes on loopback with fault injection (TCP proxies): shared by the
        // cluster tests and `aerodb-crashtest cluster`. Never part of a release node.
        .target(
            name: "LiveCluster",
            dependencies: ["Kernel", "Replication"],
            path: "CrashTests/Live",
            swiftSettings: strictSettings
        ),
        // The seeded cluster simulator (`aerodb-crashtest sim`): three replication roles in one
        // process under a simulated network and clock. Never part of a release node.
        .target(
            name: "ClusterSim",
            dependencies: ["Kernel", "Replication"],
            path: "CrashTests/Sim",
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "KernelTests",
            dependencies: ["Kernel"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "BaaSTests",
            dependencies: ["Kernel", "BaaS", .product(name: "WAT", package: "WasmKit")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ReplicationTests",
            dependencies: ["Kernel", "Replication", "ClusterSim", "LiveCluster", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "NodeTests",
            dependencies: ["Kernel", "BaaS", "Replication", "LiveCluster"],
            swiftSettings: strictSettings
        ),
    ]
)
