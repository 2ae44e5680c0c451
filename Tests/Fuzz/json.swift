// fuzz-modules: Kernel
// fuzz-options: -max_len=16384
//
// JSON.parse (Sources/Kernel/Core/JSON.swift) on any bytes: it parses or throws
// AERO_JSON_INVALID, never traps, hangs or grows without bound. Whatever parses must survive
// the round trip: encode is deterministic, re-parses to an equal value, and re-encodes to the
// same bytes; the String entry point agrees with the byte one.

@testable import Kernel

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    onSmallStack { check(data, size) }
    return 0
}

private func check(_ data: UnsafePointer<UInt8>, _ size: Int) {
    let input = UnsafeBufferPointer(start: data, count: size)
    let value: JSONValue
    do {
        value = try JSON.parse(input)
    } catch let error as AeroError {
        precondition(error.code == .jsonInvalid, "JSON.parse threw \(error)")
        return
    } catch {
        fatalError("JSON.parse threw a non-AeroError: \(error)")
    }
    let encoded = JSON.encode(value)
    let again: JSONValue
    do {
        again = try JSON.parse(encoded)
    } catch {
        fatalError("encoded JSON does not parse again (\(error)): \(String(decoding: encoded, as: UTF8.self))")
    }
    precondition(again == value, "parse -> encode -> parse changed the value: \(String(decoding: encoded, as: UTF8.self))")
    precondition(JSON.encode(again) == encoded, "encoding is not deterministic")
    precondition(JSONValue.compare(value, again) == 0, "a value does not compare equal to its round trip")
    precondition(OrderedValue(value).hashValue == OrderedValue(again).hashValue, "equal values hash differently")
    // The String entry point sees the same text when the input is valid UTF-8.
    if let text = String(validating: input, as: UTF8.self) {
        guard let viaString = try? JSON.parse(text) else { fatalError("JSON.parse(String) refuses what JSON.parse(bytes) accepts") }
        precondition(viaString == value, "JSON.parse(String) and JSON.parse(bytes) disagree")
    }
}
