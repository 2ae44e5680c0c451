// The XML of S3 bodies: a writer for answers and a small bounded reader for the two request
// documents we take (Delete, CompleteMultipartUpload).
// Reader: elements, text, the five entities and numeric references, `<?…?>` and `<!--…-->`
// skipped, attributes ignored; no DTD (`<!DOCTYPE` refused: no entity expansion). Bounds: the
// body is at most `S3Limits.xmlBodyBytesMax` (the caller collects it so), nesting at most
// `S3Limits.xmlDepthMax`; anything else is MalformedXML, never a crash.

public indirect enum S3XMLNode: Sendable {
    case leaf(String, String)
    case node(String, [S3XMLNode])
}

public final class S3XMLElement: @unchecked Sendable {  // built and read by one request
    public let name: String
    public var children: [S3XMLElement] = []
    public var text = ""
    init(_ name: String) { self.name = name }

    public func child(_ name: String) -> S3XMLElement? { children.first { $0.name == name } }
    public func all(_ name: String) -> [S3XMLElement] { children.filter { $0.name == name } }
}

public enum S3XML {
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default:
                if c.value < 0x20, c != "\n", c != "\t", c != "\r" { out += "&#\(c.value);" } else { out.unicodeScalars.append(c) }
            }
        }
        return out
    }

    static func write(_ node: S3XMLNode, into out: inout String) {
        switch node {
        case .leaf(let name, let value): out += "<\(name)>\(escape(value))</\(name)>"
        case .node(let name, let children):
            out += "<\(name)>"
            for c in children { write(c, into: &out) }
            out += "</\(name)>"
        }
    }

    /// An answer document; `namespace` false for <Error> (S3 gives errors no namespace).
    public static func document(_ root: String, _ children: [S3XMLNode], namespace: Bool = true) -> String {
        let ns = namespace ? " xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"" : ""
        var out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<\(root)\(ns)>"
        for c in children { write(c, into: &out) }
        out += "</\(root)>"
        return out
    }

    /// Parses a document; the root element.
    public static func parse(_ bytes: [UInt8]) throws -> S3XMLElement {
        guard bytes.count <= S3Limits.xmlBodyBytesMax else { throw S3Error.malformedXML("the XML body is larger than \(S3Limits.xmlBodyBytesMax) bytes") }
        var i = 0
        let n = bytes.count
        var stack: [S3XMLElement] = []
        var root: S3XMLElement?
        func starts(_ s: String, at j: Int) -> Bool {
            let u = Array(s.utf8)
            guard j + u.count <= n else { return false }
            for k in 0..<u.count where bytes[j + k] != u[k] { return false }
            return true
        }
        func find(_ s: String, from j: Int) throws -> Int {
            var k = j
            while k < n { if starts(s, at: k) { return k }; k += 1 }
            throw S3Error.malformedXML("the XML ends inside a tag")
        }
        while i < n {
            if bytes[i] == UInt8(ascii: "<") {
                if starts("<?", at: i) { i = try find("?>", from: i) + 2; continue }
                if starts("<!--", at: i) { i = try find("-->", from: i) + 3; continue }
                if starts("<!", at: i) { throw S3Error.malformedXML("DTDs and CDATA are not accepted") }
                let end = try find(">", from: i)
                var inner = Array(bytes[(i + 1)..<end])
                i = end + 1
                if inner.first == UInt8(ascii: "/") {
                    let name = String(decoding: inner.dropFirst(), as: UTF8.self).trimmingCharacters(in: .whitespaces)
                    guard let top = stack.popLast(), top.name == name else { throw S3Error.malformedXML("</\(name)> closes nothing open") }
                    continue
                }
                let selfClosing = inner.last == UInt8(ascii: "/")
                if selfClosing { inner.removeLast() }
                let nameBytes = inner.prefix { $0 != 0x20 && $0 != 0x09 && $0 != 0x0A && $0 != 0x0D }
                let full = String(decoding: nameBytes, as: UTF8.self)
                guard !full.isEmpty else { throw S3Error.malformedXML("an element has no name") }
                let name = full.split(separator: ":").last.map(String.init) ?? full  // namespace prefixes dropped
                let element = S3XMLElement(name)
                if let parent = stack.last {
                    parent.children.append(element)
                } else {
                    guard root == nil else { throw S3Error.malformedXML("more than one root element") }
                    root = element
                }
                if !selfClosing {
                    stack.append(element)
                    guard stack.count <= S3Limits.xmlDepthMax else { throw S3Error.malformedXML("XML nested deeper than \(S3Limits.xmlDepthMax)") }
                }
            } else {
                var j = i
                while j < n, bytes[j] != UInt8(ascii: "<") { j += 1 }
                let text = try unescape(String(decoding: bytes[i..<j], as: UTF8.self))
                if let top = stack.last {
                    top.text += text
                } else if !text.allSatisfy(\.isWhitespace) {
                    throw S3Error.malformedXML("text outside the root element")
                }
                i = j
            }
        }
        guard stack.isEmpty, let root else { throw S3Error.malformedXML("the XML document is incomplete") }
        return root
    }

    /// Entities decoded scalar by scalar (never by Character: `&` or `;` followed by a combining
    /// mark is one Character that is neither, while the byte-level parser above saw them; see
    /// ScalarText.swift).
    static func unescape(_ s: String) throws -> String {
        let scalars = Array(s.unicodeScalars)
        guard scalars.contains("&") else { return s }
        var out = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            guard scalars[i] == "&" else { out.append(scalars[i]); i += 1; continue }
            guard let semi = scalars[(i + 1)...].prefix(10).firstIndex(of: ";") else {
                throw S3Error.malformedXML("an unterminated entity")
            }
            var name = String.UnicodeScalarView()
            name.append(contentsOf: scalars[(i + 1)..<semi])
            switch String(name) {
            case "amp": out.append("&")
            case "lt": out.append("<")
            case "gt": out.append(">")
            case "quot": out.append("\"")
            case "apos": out.append("'")
            case let other:
                let v: UInt32?
                if other.hasPrefix("#x") { v = UInt32(other.dropFirst(2), radix: 16) } else if other.hasPrefix("#") { v = UInt32(other.dropFirst()) } else { v = nil }
                guard let v, let scalar = Unicode.Scalar(v) else { throw S3Error.malformedXML("unknown entity &\(other);") }
                out.append(scalar)
            }
            i = semi + 1
        }
        return String(out)
    }
}
