package messages

import (
	"fmt"
	"testing"
)

// everyState is AllStates plus the zero value and a name nobody defined.
var everyState = append(append([]TaskState{}, AllStates...), StateUnknown, TaskState("bogus"))

// allowedTransitions is the rule of docs/contract.md (Task states) written
// out by hand, so the test does not repeat the ranks that Transition uses.
// Key "from>to".
var allowedTransitions = map[Event]map[string]bool{
	EventProgress: set(
		"received>waiting-for-endpoint", "received>waiting-for-nodes", "received>waiting-for-launch",
		"received>running", "received>success", "received>failed", "received>cancelled",
		"waiting-for-endpoint>waiting-for-nodes", "waiting-for-endpoint>waiting-for-launch",
		"waiting-for-endpoint>running", "waiting-for-endpoint>success", "waiting-for-endpoint>failed",
		"waiting-for-endpoint>cancelled",
		"waiting-for-nodes>waiting-for-launch", "waiting-for-nodes>running", "waiting-for-nodes>success",
		"waiting-for-nodes>failed", "waiting-for-nodes>cancelled",
		"waiting-for-launch>running", "waiting-for-launch>success", "waiting-for-launch>failed",
		"waiting-for-launch>cancelled",
		"running>success", "running>failed", "running>cancelled",
	),
	// A lost holder also allows going back to a waiting state upstream of it.
	EventLost: set(
		"received>waiting-for-endpoint", "received>waiting-for-nodes", "received>waiting-for-launch",
		"received>running", "received>success", "received>failed", "received>cancelled",
		"waiting-for-endpoint>waiting-for-nodes", "waiting-for-endpoint>waiting-for-launch",
		"waiting-for-endpoint>running", "waiting-for-endpoint>success", "waiting-for-endpoint>failed",
		"waiting-for-endpoint>cancelled",
		"waiting-for-nodes>waiting-for-launch", "waiting-for-nodes>running", "waiting-for-nodes>success",
		"waiting-for-nodes>failed", "waiting-for-nodes>cancelled",
		"waiting-for-launch>running", "waiting-for-launch>success", "waiting-for-launch>failed",
		"waiting-for-launch>cancelled",
		"running>success", "running>failed", "running>cancelled",
		"waiting-for-nodes>waiting-for-endpoint",
		"waiting-for-launch>waiting-for-endpoint", "waiting-for-launch>waiting-for-nodes",
		"running>waiting-for-endpoint", "running>waiting-for-nodes", "running>waiting-for-launch",
	),
}

func set(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func stateName(s TaskState) string {
	if s == StateUnknown {
		return "unknown"
	}
	return string(s)
}

func TestTransitionEveryTriple(t *testing.T) {
	for _, ev := range []Event{EventProgress, EventLost} {
		for _, from := range everyState {
			for _, to := range everyState {
				want := allowedTransitions[ev][string(from)+">"+string(to)]
				name := fmt.Sprintf("%s/%s>%s", map[Event]string{EventProgress: "progress", EventLost: "lost"}[ev], stateName(from), stateName(to))
				t.Run(name, func(t *testing.T) {
					if got := Transition(from, to, ev); got != want {
						t.Fatalf("Transition(%q, %q, %d) = %v, want %v", from, to, ev, got, want)
					}
				})
			}
		}
	}
}

func TestTransitionInvariants(t *testing.T) {
	for _, ev := range []Event{EventProgress, EventLost, Event(9)} {
		for _, from := range everyState {
			for _, to := range everyState {
				ok := Transition(from, to, ev)
				if ok && from.Terminal() {
					t.Errorf("left terminal %s for %s", from, to)
				}
				if ok && from == to {
					t.Errorf("self transition %s allowed", from)
				}
				if ok && to == StateReceived {
					t.Errorf("%s>received allowed", from)
				}
				if ev != EventLost && ev != EventProgress && ok != Transition(from, to, EventProgress) {
					t.Errorf("unknown event %d differs from progress for %s>%s", ev, from, to)
				}
			}
		}
	}
}

func TestApply(t *testing.T) {
	cases := []struct {
		name    string
		from    TaskState
		cur     uint32
		to      TaskState
		attempt uint32
		want    Verdict
	}{
		// forward, same attempt
		{"launch to running", StateWaitingForLaunch, 1, StateRunning, 1, Applied},
		{"running to success", StateRunning, 1, StateSuccess, 1, Applied},
		{"nodes straight to failed", StateWaitingForNodes, 0, StateFailed, 0, Applied},
		{"received to waiting for endpoint", StateReceived, 0, StateWaitingForEndpoint, 0, Applied},
		{"waiting to cancelled", StateWaitingForEndpoint, 0, StateCancelled, 0, Applied},

		// Same
		{"running again", StateRunning, 1, StateRunning, 1, Same},
		{"waiting again", StateWaitingForNodes, 0, StateWaitingForNodes, 0, Same},
		{"success again", StateSuccess, 1, StateSuccess, 1, Same},
		{"success again from a later attempt", StateSuccess, 1, StateSuccess, 2, Same},
		{"success again from an older attempt", StateSuccess, 2, StateSuccess, 1, Same},
		{"cancelled again", StateCancelled, 0, StateCancelled, 0, Same},

		// stale attempts never apply, whatever their state
		{"older attempt finishing", StateRunning, 2, StateSuccess, 1, Stale},
		{"older attempt running", StateWaitingForNodes, 3, StateRunning, 2, Stale},
		{"older attempt same state", StateRunning, 2, StateRunning, 1, Stale},
		{"older attempt going back", StateRunning, 2, StateWaitingForNodes, 1, Stale},
		{"attempt zero after retries", StateWaitingForLaunch, 5, StateFailed, 0, Stale},

		// terminal finality: checked before staleness, nothing leaves it
		{"success to running", StateSuccess, 1, StateRunning, 1, Regress},
		{"success to running newer attempt", StateSuccess, 1, StateRunning, 2, Regress},
		{"success to waiting newer attempt", StateSuccess, 1, StateWaitingForNodes, 2, Regress},
		{"failed to success", StateFailed, 1, StateSuccess, 1, Regress},
		{"failed to success newer attempt", StateFailed, 1, StateSuccess, 2, Regress},
		{"cancelled to success", StateCancelled, 1, StateSuccess, 1, Regress},
		{"cancelled to running older attempt", StateCancelled, 3, StateRunning, 0, Regress},

		// backward only with a newer attempt, and only to a waiting state
		{"running back to nodes same attempt", StateRunning, 1, StateWaitingForNodes, 1, Regress},
		{"running back to launch same attempt", StateRunning, 1, StateWaitingForLaunch, 1, Regress},
		{"launch back to nodes same attempt", StateWaitingForLaunch, 1, StateWaitingForNodes, 1, Regress},
		{"nodes back to endpoint same attempt", StateWaitingForNodes, 1, StateWaitingForEndpoint, 1, Regress},
		{"running back to nodes newer attempt", StateRunning, 1, StateWaitingForNodes, 2, Applied},
		{"running back to endpoint newer attempt", StateRunning, 1, StateWaitingForEndpoint, 2, Applied},
		{"launch back to nodes newer attempt", StateWaitingForLaunch, 1, StateWaitingForNodes, 2, Applied},
		{"nodes back to endpoint newer attempt", StateWaitingForNodes, 1, StateWaitingForEndpoint, 3, Applied},
		{"back to received never", StateRunning, 1, StateReceived, 2, Regress},
		// merged deltas may show the re-queued attempt already on its next node
		{"running back to launch newer attempt", StateRunning, 1, StateWaitingForLaunch, 2, Applied},

		// a newer attempt in the same or a later state
		{"running with newer attempt", StateRunning, 1, StateRunning, 2, Applied},
		{"waiting with newer attempt", StateWaitingForEndpoint, 1, StateWaitingForEndpoint, 2, Applied},
		{"newer attempt finishing", StateWaitingForEndpoint, 1, StateSuccess, 2, Applied},

		// nonsense states
		{"to unknown", StateRunning, 1, StateUnknown, 1, Regress},
		{"to bogus newer attempt", StateRunning, 1, TaskState("bogus"), 2, Regress},
		{"from unknown", StateUnknown, 0, StateRunning, 0, Regress},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Apply(tc.from, tc.cur, tc.to, tc.attempt); got != tc.want {
				t.Fatalf("Apply(%s/%d, %s/%d) = %s, want %s", tc.from, tc.cur, tc.to, tc.attempt, got, tc.want)
			}
		})
	}
}

// Every (from, to) pair at an older, equal and newer attempt.
func TestApplyEveryPair(t *testing.T) {
	const cur = 5
	for _, from := range everyState {
		for _, to := range everyState {
			for _, attempt := range []uint32{0, cur - 1, cur, cur + 1, 1<<32 - 1} {
				var want Verdict
				switch {
				case from.Terminal() && from == to:
					want = Same
				case from.Terminal():
					want = Regress
				case attempt < cur:
					want = Stale
				case attempt == cur && from == to:
					want = Same
				case attempt == cur:
					want = verdictOf(allowedTransitions[EventProgress][string(from)+">"+string(to)])
				default: // newer attempt: the holder was lost
					want = verdictOf(from == to || allowedTransitions[EventLost][string(from)+">"+string(to)])
				}
				name := fmt.Sprintf("%s>%s@%d", stateName(from), stateName(to), attempt)
				t.Run(name, func(t *testing.T) {
					if got := Apply(from, cur, to, attempt); got != want {
						t.Fatalf("Apply(%q/%d, %q/%d) = %s, want %s", from, cur, to, attempt, got, want)
					}
				})
			}
		}
	}
}

func verdictOf(ok bool) Verdict {
	if ok {
		return Applied
	}
	return Regress
}

func TestVerdictString(t *testing.T) {
	for v, want := range map[Verdict]string{Applied: "applied", Stale: "stale", Regress: "regress", Same: "same", 9: "verdict(9)"} {
		if got := v.String(); got != want {
			t.Errorf("Verdict(%d) = %q, want %q", uint8(v), got, want)
		}
	}
}

func TestCodeStateConversion(t *testing.T) {
	cases := []struct {
		code     TaskStatusCode
		wire     uint8
		state    TaskState
		terminal bool
	}{
		{WaitingForNodes, 1, StateWaitingForNodes, false},
		{WaitingForLaunch, 2, StateWaitingForLaunch, false},
		{Running, 3, StateRunning, false},
		{Success, 4, StateSuccess, true},
		{Failed, 5, StateFailed, true},
		{Cancelled, 6, StateCancelled, true},
	}
	for _, tc := range cases {
		t.Run(string(tc.state), func(t *testing.T) {
			if uint8(tc.code) != tc.wire {
				t.Fatalf("%s is %d on the wire, want %d", tc.state, uint8(tc.code), tc.wire)
			}
			if !tc.code.Valid() || tc.code.Terminal() != tc.terminal || tc.state.Terminal() != tc.terminal {
				t.Fatalf("Valid %v Terminal %v/%v", tc.code.Valid(), tc.code.Terminal(), tc.state.Terminal())
			}
			if got := tc.code.State(); got != tc.state {
				t.Fatalf("State() = %q, want %q", got, tc.state)
			}
			back, ok := tc.state.Code()
			if !ok || back != tc.code {
				t.Fatalf("Code() = %d, %v; want %d", back, ok, tc.code)
			}
			if tc.code.String() != string(tc.state) {
				t.Fatalf("String() = %q", tc.code.String())
			}
			parsed, err := ParseTaskState(string(tc.state))
			if err != nil || parsed != tc.state {
				t.Fatalf("ParseTaskState: %q, %v", parsed, err)
			}
		})
	}
	// Every byte: valid codes convert both ways, the rest have no state.
	for c := 0; c < 256; c++ {
		code := TaskStatusCode(c)
		st := code.State()
		if code.Valid() != (st != StateUnknown) {
			t.Errorf("code %d: Valid %v, State %q", c, code.Valid(), st)
		}
		if back, ok := st.Code(); ok && back != code {
			t.Errorf("code %d: State %q converts back to %d", c, st, back)
		}
	}
	// Every state: the service-only ones have no code.
	for _, s := range everyState {
		code, ok := s.Code()
		wantOK := s != StateReceived && s != StateWaitingForEndpoint && s != StateUnknown && s != "bogus"
		if ok != wantOK {
			t.Errorf("%q: Code ok = %v, want %v", s, ok, wantOK)
		}
		if ok && code.State() != s {
			t.Errorf("%q: code %d converts back to %q", s, code, code.State())
		}
		if !ok && code != CodeNone {
			t.Errorf("%q: code %d without ok", s, code)
		}
	}
	for _, bad := range []string{"", "bogus", "Running", "waiting_for_nodes"} {
		if _, err := ParseTaskState(bad); err == nil {
			t.Errorf("ParseTaskState(%q) accepted", bad)
		}
	}
}

func TestStateCounts(t *testing.T) {
	var n StateCounts
	for _, c := range []TaskStatusCode{Success, Failed, Success, TaskStatusCode(200)} {
		n.Add(c)
	}
	got := map[TaskState]float64{}
	n.Each(func(s TaskState, k float64) { got[s] += k })
	want := map[TaskState]float64{StateSuccess: 2, StateFailed: 1, StateUnknown: 1}
	if len(got) != len(want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	for s, k := range want {
		if got[s] != k {
			t.Errorf("counts %v, want %v", got, want)
		}
	}
}
