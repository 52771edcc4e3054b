package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/switchyard-hpc/switchyard/client"
)

func TestParseTaskFile(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		n        int
		wantErr  []string
	}{
		{name: "document", in: `{"tasks":[{"kind":"noop"},{"kind":"noop"}]}`, n: 2},
		{name: "pretty document", in: "{\n  \"tasks\": [\n    {\"kind\": \"noop\"}\n  ]\n}\n", n: 1},
		{name: "lines", in: "{\"kind\":\"noop\"}\n\n{\"kind\":\"sleep\",\"args\":[\"1\"]}\n", n: 2},
		{name: "empty list", in: `{"tasks":[]}`, wantErr: []string{`the "tasks" list is empty`}},
		{name: "tasks not a list", in: `{"tasks":{"kind":"noop"}}`, wantErr: []string{`"tasks" must be a list`}},
		{name: "empty file", in: "  \n", wantErr: []string{"is empty", `{"tasks":[...]}`}},
		{name: "truncated", in: `{"tasks":[{"kind":"noop"}`, wantErr: []string{"not valid JSON", "unexpected end of JSON input", "after 25 bytes", "truncated"}},
		{name: "truncated pretty", in: "{\n \"tasks\": [\n  {\"kind\": \"noop\"},\n", wantErr: []string{"not valid JSON", "truncated"}},
		{name: "bad byte", in: `{"tasks":[{"kind":noop}]}`, wantErr: []string{"invalid character 'o'", "at byte 20 of 25"}},
		{name: "bad second line", in: "{\"kind\":\"noop\"}\n{\"kind\":\n", wantErr: []string{"line 2 is not JSON", "truncated"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTaskFile("f.json", []byte(tc.in))
			if tc.wantErr == nil {
				if err != nil || len(got) != tc.n {
					t.Fatalf("got %d tasks, %v; want %d", len(got), err, tc.n)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %d tasks, want an error with %q", len(got), tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	httpErr := func(status int) error {
		return &client.Error{Method: "GET", Path: "/v1/x", Status: status, Message: "m"}
	}
	for _, tc := range []struct {
		err  error
		want int
	}{
		{errors.New("unknown flag --x"), exitUsage},
		{httpErr(http.StatusBadRequest), exitUsage},
		{httpErr(http.StatusNotFound), exitUsage},
		{httpErr(http.StatusUnauthorized), exitServer},
		{httpErr(http.StatusForbidden), exitServer},
		{httpErr(http.StatusTooManyRequests), exitServer},
		{httpErr(http.StatusServiceUnavailable), exitServer},
		{fmt.Errorf("list: %w", &client.UnreachableError{Base: "http://x", Err: errors.New("refused")}), exitServer},
		{exitf(exitTaskFailed, "failed"), exitTaskFailed},
		{&exitError{exitTimeout, &errUnfinished{cause: errors.New("timed out")}}, exitTimeout},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
