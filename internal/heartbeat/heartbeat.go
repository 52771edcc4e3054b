// Package heartbeat holds the timing rules every link shares: defaults,
// the housekeeping period that checks deadlines, and reconnect backoff.
package heartbeat

import (
	"fmt"
	"time"
)

// DefaultInterval is the default --heartbeat-interval (docs/contract.md,
// Heartbeats); the threshold defaults to three intervals.
const DefaultInterval = 10 * time.Second

// Defaults fills zero values and checks that the pair makes sense.
func Defaults(interval, threshold *time.Duration) error {
	if *interval == 0 {
		*interval = DefaultInterval
	}
	if *threshold == 0 {
		*threshold = 3 * *interval
	}
	if *interval < time.Millisecond {
		return fmt.Errorf("--heartbeat-interval %s is too short (minimum 1ms)", *interval)
	}
	if *threshold <= *interval {
		return fmt.Errorf("--heartbeat-threshold %s must be longer than --heartbeat-interval %s", *threshold, *interval)
	}
	return nil
}

// Tick is how often a loop checks its deadlines: a tenth of the interval,
// between 5ms and 100ms, so detection lags the threshold by little.
func Tick(interval time.Duration) time.Duration {
	return min(max(interval/10, 5*time.Millisecond), 100*time.Millisecond)
}

// MaxBackoff caps reconnect backoff: 32s as in the ZeroMQ guide, or less
// with short test thresholds.
func MaxBackoff(threshold time.Duration) time.Duration {
	return min(32*time.Second, max(4*threshold, time.Second))
}

// NextBackoff doubles the wait, starting from the interval.
func NextBackoff(cur, interval, threshold time.Duration) time.Duration {
	return min(max(2*cur, interval), MaxBackoff(threshold))
}
