// `/dashboard`: the web console of a node (docs/DASHBOARD.md), plain HTML, CSS and JavaScript
// modules from `Sources/BaaS/Dashboard/static`, compiled into the binary by SwiftPM's
// `.embedInCode` resource rule (Package.swift): the generated `PackageResources.<file>_<ext>`
// byte arrays are part of the BaaS module, so a node serves its dashboard with no resource
// bundle or repository next to it. `embedInCode` flattens the folder: file names must be unique.
//
// Routes (no key: the files are public, the page asks for the service key and sends it to the
// APIs only, never in a URL):
//   GET /dashboard (and /dashboard/: the router ignores a trailing slash) -> index.html, which
//                             names its files by absolute path (/dashboard/app.js)
//   GET /dashboard/<file>     -> one of `DashboardAssets.files`, else the JSON 404 AERO_NOT_FOUND
// Invariants (DASH1 in docs/INVARIANTS.md): every answer carries `DashboardAssets.contentSecurityPolicy`
// (scripts and styles from this origin only, no inline script, no eval, no third-party origin,
// no framing) and `X-Content-Type-Options: nosniff`; the page renders API data only through
// `textContent` and attributes set one by one, never through HTML parsing.

import HTTPTypes
import Hummingbird
import Kernel
import NIOCore

public enum DashboardAssets {
    /// One static file of the dashboard: its bytes (built once) and media type.
    public struct File: Sendable {
        public let body: ByteBuffer
        public let contentType: String
    }

    /// Strict: nothing inline, nothing evaluated, nothing from another origin, no framing, no forms posted anywhere.
    public static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
        + "font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    /// Every servable file by its URL name under `/dashboard/`. A file added to `static/` must be listed here.
    public static let files: [String: File] = [
        "index.html": File(body: ByteBuffer(bytes: PackageResources.index_html), contentType: "text/html; charset=utf-8"),
        "app.js": File(body: ByteBuffer(bytes: PackageResources.app_js), contentType: "text/javascript; charset=utf-8"),
        "api.js": File(body: ByteBuffer(bytes: PackageResources.api_js), contentType: "text/javascript; charset=utf-8"),
        "dom.js": File(body: ByteBuffer(bytes: PackageResources.dom_js), contentType: "text/javascript; charset=utf-8"),
        "style.css": File(body: ByteBuffer(bytes: PackageResources.style_css), contentType: "text/css; charset=utf-8"),
        "ui.js": File(body: ByteBuffer(bytes: PackageResources.ui_js), contentType: "text/javascript; charset=utf-8"),
        "table.js": File(body: ByteBuffer(bytes: PackageResources.table_js), contentType: "text/javascript; charset=utf-8"),
        "policies.js": File(body: ByteBuffer(bytes: PackageResources.policies_js), contentType: "text/javascript; charset=utf-8"),
        "users.js": File(body: ByteBuffer(bytes: PackageResources.users_js), contentType: "text/javascript; charset=utf-8"),
        "storage.js": File(body: ByteBuffer(bytes: PackageResources.storage_js), contentType: "text/javascript; charset=utf-8"),
        "functions.js": File(body: ByteBuffer(bytes: PackageResources.functions_js), contentType: "text/javascript; charset=utf-8"),
        "realtime.js": File(body: ByteBuffer(bytes: PackageResources.realtime_js), contentType: "text/javascript; charset=utf-8"),
        "cluster.js": File(body: ByteBuffer(bytes: PackageResources.cluster_js), contentType: "text/javascript; charset=utf-8"),
        "logs.js": File(body: ByteBuffer(bytes: PackageResources.logs_js), contentType: "text/javascript; charset=utf-8"),
        "keys.js": File(body: ByteBuffer(bytes: PackageResources.keys_js), contentType: "text/javascript; charset=utf-8"),
    ]

    /// Total bytes of the dashboard (the page-weight goal is under 300 KB uncompressed).
    public static var totalBytes: Int { files.values.reduce(0) { $0 + $1.body.readableBytes } }

    static func headers(contentType: String) -> HTTPFields {
        var fields = HTTPFields()
        fields[.contentType] = contentType
        fields[HTTPField.Name("Content-Security-Policy")!] = contentSecurityPolicy
        fields[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        fields[HTTPField.Name("X-Frame-Options")!] = "DENY"
        fields[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        fields[.cacheControl] = "no-cache"
        return fields
    }

    static func response(_ name: String) -> Response {
        guard let file = files[name] else {
            return HTTPErrors.response(AeroError(.notFound, "no dashboard file \(name)"))
        }
        return Response(status: .ok, headers: headers(contentType: file.contentType), body: .init(byteBuffer: file.body))
    }
}

public enum DashboardRoutes {
    public static func register(on router: Router<AeroRequestContext>) {
        router.get("/dashboard") { _, _ in DashboardAssets.response("index.html") }
        router.get("/dashboard/:file") { _, context in
            DashboardAssets.response(try context.parameters.require("file"))
        }
    }
}
