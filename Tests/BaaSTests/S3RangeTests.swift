// StorageAPI.byteSpan: the one Range-header answer that `/storage/v1` GETs and S3 GetObject /
// HeadObject share (200 whole, 206 with its Content-Range, nil -> 416 InvalidRange). End to end:
// test_storage.py::test_raw_upload_range_etag, test_s3.py::test_buckets_and_objects_every_operation.

import Testing
@testable import BaaS

@Suite struct S3RangeTests {
    @Test func byteSpanAnswersWholePartOrUnsatisfiable() {
        #expect(StorageAPI.byteSpan(nil, size: 100)! == (0, 100, nil))
        #expect(StorageAPI.byteSpan("bytes=0-1,5-6", size: 100)! == (0, 100, nil))  // several ranges: the whole body
        #expect(StorageAPI.byteSpan("bytes=10-19", size: 100)! == (10, 20, "bytes 10-19/100"))
        #expect(StorageAPI.byteSpan("bytes=-5", size: 100)! == (95, 100, "bytes 95-99/100"))
        #expect(StorageAPI.byteSpan("bytes=90-1000", size: 100)! == (90, 100, "bytes 90-99/100"))
        #expect(StorageAPI.byteSpan("bytes=100-", size: 100) == nil)
        #expect(StorageAPI.byteSpan("bytes=-1", size: 0) == nil)
    }
}
