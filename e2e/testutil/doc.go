// Package testutil holds helpers shared by Switchyard's in-process tests:
// polling with a deadline, starting the daemons on ephemeral ports and
// stopping them in t.Cleanup, an HTTP JSON client, metric readers, and raw
// ZMQ peers (a fake manager or interchange as a DEALER, a fake forwarder or
// interchange as a ROUTER) that speak the messages package so tests can send
// crafted frames.
//
// Nothing here sleeps to synchronise: WaitFor polls a condition until a
// deadline, and Peer.Sync uses a HeartbeatReq/HeartbeatResp round trip as a
// barrier (a daemon's loop handles one connection's messages in order).
package testutil
