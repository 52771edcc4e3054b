package messages

import (
	"fmt"
	"strings"
)

// ServingState orders from least to most restrictive.
type ServingState uint8

const (
	NonePaused ServingState = iota
	PushPaused
	PushAndDispatchPaused
	servingLimit
)

var servingNames = [...]string{"NONE_PAUSED", "PUSH_PAUSED", "PUSH_AND_DISPATCH_PAUSED"}

func (s ServingState) String() string {
	if s < servingLimit {
		return servingNames[s]
	}
	return fmt.Sprintf("ServingState(%d)", uint8(s))
}

// Valid reports whether s is one of the three states.
func (s ServingState) Valid() bool { return s < servingLimit }

// LegalServingStates is the list shown in refusals, most restrictive first.
const LegalServingStates = "PUSH_AND_DISPATCH_PAUSED, PUSH_PAUSED, NONE_PAUSED"

// ParseServingState accepts the three names; Celeborn's
// PUSH_AND_REPLICATE_PAUSED is taken as PUSH_AND_DISPATCH_PAUSED.
func ParseServingState(v string) (ServingState, error) {
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case "NONE_PAUSED":
		return NonePaused, nil
	case "PUSH_PAUSED":
		return PushPaused, nil
	case "PUSH_AND_DISPATCH_PAUSED", "PUSH_AND_REPLICATE_PAUSED":
		return PushAndDispatchPaused, nil
	}
	//lint:ignore ST1005 the operator-facing wording of docs/contract.md, Serving states
	return 0, fmt.Errorf("Invalid state '%s'. Legal values: %s", v, LegalServingStates)
}

// PushAllowed says whether new tasks may be pushed to a peer in state s.
func (s ServingState) PushAllowed() bool { return s == NonePaused }

// DispatchAllowed says whether queued tasks may be handed to workers.
func (s ServingState) DispatchAllowed() bool { return s != PushAndDispatchPaused }

// MarshalText writes the state's name.
func (s ServingState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s *ServingState) UnmarshalText(b []byte) error {
	v, err := ParseServingState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
