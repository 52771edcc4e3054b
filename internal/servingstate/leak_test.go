package servingstate_test

import (
	"testing"

	"github.com/switchyard-hpc/switchyard/e2e/testutil"
)

// Every test must leave no goroutine behind: daemons stop completely.
func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
