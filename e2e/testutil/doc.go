// Package testutil holds helpers shared by Switchyard's tests: polling with
// a deadline, starting the daemons in-process on ephemeral ports and
// stopping them in t.Cleanup, the process kit (the switchyard binary built
// once, daemons started from it as real processes with the launch spec's
// command lines, their logs kept and printed on failure), an HTTP JSON
// client, metric readers, and raw ZMQ peers (a fake manager or interchange
// as a DEALER, a fake forwarder or interchange as a ROUTER) that speak the
// messages package so tests can send crafted frames.
//
// Nothing here sleeps to synchronise: WaitFor polls a condition until a
// deadline, and Peer.Sync uses a HeartbeatReq/HeartbeatResp round trip as a
// barrier (a daemon's loop handles one connection's messages in order).
package testutil
