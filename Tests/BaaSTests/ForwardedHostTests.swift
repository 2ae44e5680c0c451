// X-AeroDB-Forwarded-Host: the host a client addressed on the member that forwarded its request
// (S3 SigV4 signs the host). Only a value the member signed under its own domain is believed;
// the S3 end-to-end case through a replica is Tests/Compat/test_s3.py
// (test_multipart_and_range_through_a_replica_of_three_nodes).

import Testing
@testable import BaaS

@Suite struct ForwardedHostTests {
    static let secret = Array("a cluster secret of at least thirty-two bytes".utf8)

    @Test func aSignedHostVerifiesAndAnythingElseIsIgnored() {
        let signed = ForwardedHost.sign("127.0.0.1:54322", secret: Self.secret)
        #expect(ForwardedHost.verify(signed, secret: Self.secret) == "127.0.0.1:54322")
        // A client's own header, another cluster's signature, a changed host: not believed.
        #expect(ForwardedHost.verify("127.0.0.1:54322", secret: Self.secret) == nil)
        #expect(ForwardedHost.verify(signed, secret: Array("another cluster secret, also long enough".utf8)) == nil)
        let forged = "evil.example:80" + signed[signed.lastIndex(of: ";")!...]
        #expect(ForwardedHost.verify(String(forged), secret: Self.secret) == nil)
    }

    @Test func aSignedClientAddressIsNotAHostAndTheOtherWayRound() {
        // Each header has its own MAC domain: a value signed for one is refused as the other.
        let address = ClientAddress.sign("10.0.0.7", secret: Self.secret)
        #expect(ForwardedHost.verify(address, secret: Self.secret) == nil)
        let host = ForwardedHost.sign("10.0.0.7", secret: Self.secret)
        #expect(ClientAddress.verify(host, secret: Self.secret) == nil)
        #expect(ClientAddress.verify(address, secret: Self.secret) == "10.0.0.7")
    }
}
