package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// docs/cli.md is generated from the commands; regenerate it with
// `go run ./cmd/switchyard docs cli > docs/cli.md` when this fails.
func TestCLIReferenceIsCurrent(t *testing.T) {
	for _, v := range docsEnv {
		t.Setenv(v, "")
	}
	want := cliReference(newRoot())
	got, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatalf("read docs/cli.md: %v (make it with: go run ./cmd/switchyard docs cli > docs/cli.md)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("docs/cli.md is out of date (first difference at line %d: have %q, the commands say %q); regenerate it with: go run ./cmd/switchyard docs cli > docs/cli.md", i+1, g, w)
			}
		}
	}
	for _, cmd := range []string{"## switchyard tasks", "## switchyard wait", "## switchyard endpoint up", "Exit status (every command)"} {
		if !bytes.Contains(want, []byte(cmd)) {
			t.Errorf("the reference lacks %q", cmd)
		}
	}
	if bytes.Contains(want, []byte("## switchyard docs")) {
		t.Error("the hidden docs command is in the reference")
	}
}
