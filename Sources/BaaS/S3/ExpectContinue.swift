// `Expect: 100-continue` (RFC 9110 §10.1.1): botocore and the aws CLI send it with every PUT/POST
// body and wait up to a second for the interim answer before sending the body anyway. This
// handler, in the HTTP/1 pipeline after part decoding, answers `100 Continue` at once when a
// request head asks for it, so such a client never stalls. The final answer follows as usual
// (a request refused early still has its body read and discarded by the server).

import HTTPTypes
import NIOCore
import NIOHTTPTypes

public final class ExpectContinueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPRequestPart
    public typealias InboundOut = HTTPRequestPart
    public typealias OutboundIn = HTTPResponsePart
    public typealias OutboundOut = HTTPResponsePart

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data), let expect = head.headerFields[.expect], expect.lowercased() == "100-continue" {
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
        }
        context.fireChannelRead(data)
    }
}
