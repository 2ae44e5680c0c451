import Foundation
import Testing
@testable import BaaS

/// The QR encoder (QRCode) against facts of the standard and a real decoder (zbarimg, from
/// Debian's zbar-tools, reads what it renders: Tests/Compat/test_auth_mfa.py).
@Suite struct QRCodeTests {
    /// The Reed-Solomon example of ISO/IEC 18004 Annex I ("01234567", version 1-M): its 10
    /// error-correction codewords.
    @Test func reedSolomonMatchesTheStandardsExample() {
        let data: [UInt8] = [0x10, 0x20, 0x0C, 0x56, 0x61, 0x80, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11]
        #expect(QRCode.reedSolomon(data, 10) == [0xA5, 0x24, 0xD4, 0xC1, 0xED, 0x36, 0xC7, 0x87, 0x2C, 0x55])
    }

    @Test func formatAndVersionInformationAreTheTabulatedCodes() {
        // Level M mask 0 is 101010000010010 (ISO/IEC 18004 Table C.1); version 7 is 000111110010010100 (Table D.1).
        #expect(QRCode.bch(0, 5, generator: 0x537, bits: 10) ^ 0x5412 == 0b101010000010010)
        #expect(QRCode.bch(7, 6, generator: 0x1F25, bits: 12) == 0b000111110010010100)
    }

    @Test func sizesGrowWithTheTextAndTooLongIsNil() throws {
        #expect(try #require(QRCode.matrix("hello")).count == 21)
        #expect(try #require(QRCode.matrix(String(repeating: "a", count: QRCode.bytesMax))).count == 57)
        #expect(QRCode.matrix(String(repeating: "a", count: QRCode.bytesMax + 1)) == nil)
        let svg = try #require(QRCode.svg("otpauth://totp/x:y?secret=AAAA"))
        #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\"") && svg.hasSuffix("</svg>"))
    }
}
