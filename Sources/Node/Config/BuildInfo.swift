// What `aerodb --version` and `GET /` report: the release version and how this binary was built.
// The version is bumped by hand with each release; the build is the configuration (`debug` is
// what `swift build` and scripts/dev make, `release` what scripts/install makes), the compiler
// and the platform.

enum BuildInfo {
    static let version = "0.1.0"

    static var configuration: String {
        #if DEBUG
        return "debug"
        #else
        return "release"
        #endif
    }

    static var compiler: String {
        #if compiler(>=6.3)
        return "Swift 6.3"
        #elseif compiler(>=6.2)
        return "Swift 6.2"
        #else
        return "Swift 6"
        #endif
    }

    static var platform: String {
        #if os(Linux) && arch(x86_64)
        return "linux-x86_64"
        #elseif os(Linux) && arch(arm64)
        return "linux-arm64"
        #else
        return "other"
        #endif
    }

    /// `aerodb 0.1.0 (release build, Swift 6.3, linux-x86_64)`.
    static var line: String { "aerodb \(version) (\(configuration) build, \(compiler), \(platform))" }
}
