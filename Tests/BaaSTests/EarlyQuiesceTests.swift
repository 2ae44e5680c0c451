import Testing
@testable import BaaS

/// EarlyQuiesce (SD1): what a stopping server's quiesce event does to a connection whose first
/// request is, or is not yet, routed. The node-level test with real sockets is
/// `ShutdownTests.SD1_connectionsWhoseFirstRequestIsNotRoutedYetDoNotHoldAStoppingNode`.
@Suite struct EarlyQuiesceTests {
    @Test func SD1_aConnectionThatSentNothingIsClosedAtOnce() {
        var state = EarlyQuiesce()
        #expect(state.quiesce() == .close)
    }

    @Test func SD1_aHalfReadFirstRequestIsAnsweredThenTheEventReachesTheInstalledHandlers() {
        var state = EarlyQuiesce()
        state.read()
        #expect(state.quiesce() == .none)
        #expect(state.quiesce() == .none)  // a second event changes nothing
        #expect(state.route() == true)  // fired again, once
        #expect(state.quiesce() == .forward)  // the refired event passes on
    }

    @Test func SD1_afterRoutingTheEventPassesOnAndRoutingAloneFiresNothing() {
        var state = EarlyQuiesce()
        state.read()
        #expect(state.route() == false)
        #expect(state.quiesce() == .forward)
        #expect(state.route() == false)
        state.read()
        #expect(state.quiesce() == .forward)
    }
}
