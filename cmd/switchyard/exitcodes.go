package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/switchyard-hpc/switchyard/client"
)

// Exit statuses of every command: one table, shown in the root --help and
// the README.
const (
	exitOK          = 0
	exitUsage       = 1 // bad flags or arguments, or an unknown task or endpoint
	exitTimeout     = 2 // a wait ran out, or a result was asked of a task still running
	exitTaskFailed  = 3 // a task failed or was cancelled
	exitServer      = 4 // the server could not be reached or refused (401, 403, 429, 5xx)
	exitDamaged     = 5 // 'store check' found damage
	exitInterrupted = 130
)

// exitTable is the table as users read it.
const exitTable = `Exit status (every command):
  0    ok
  1    usage error (bad flag, argument or input), or an unknown task id or endpoint
  2    not finished: 'wait --timeout' ran out, or 'result' of a task still running
  3    a task failed or was cancelled ('wait', 'result')
  4    the server cannot be reached, or refused the request (HTTP 401, 403, 429, 5xx)
  5    'store check' found the store damaged
  130  interrupted (Ctrl-C); 'wait' first prints the ids that had not finished`

// exitError carries a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitf(code int, format string, args ...any) error {
	return &exitError{code, fmt.Errorf(format, args...)}
}

// exitCode maps an error to the table above.
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, context.Canceled) {
		return exitInterrupted
	}
	var un *client.UnreachableError
	if errors.As(err, &un) {
		return exitServer
	}
	switch s := client.StatusOf(err); {
	case s == http.StatusUnauthorized || s == http.StatusForbidden || s == http.StatusTooManyRequests || s >= 500:
		return exitServer
	case errors.Is(err, context.DeadlineExceeded):
		return exitTimeout
	}
	return exitUsage
}
