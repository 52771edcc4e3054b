package main

import (
	"bytes"
	"os"
	"regexp"
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

// The docs name Go files so a reader can open them: each must exist.
// A name with a slash is a path from the repository's root; a bare name
// is allowed only in a table column headed by its package directory
// (the "Where each concern lives" table of docs/architecture.md).
// Repository paths in code spans (`internal/seqarr`) must exist too.
func TestDocsNameFilesThatExist(t *testing.T) {
	const root = "../../"
	for _, doc := range []string{"docs/architecture.md", "docs/contract.md", "docs/operations.md",
		"docs/protocol.md", "docs/worker-protocol.md", "README.md"} {
		b, err := os.ReadFile(root + doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range docFileRefs(string(b)) {
			if m.pkg == "" && !strings.Contains(m.name, "/") {
				if strings.HasSuffix(m.name, ".go") {
					t.Errorf("%s:%d: name `%s` with its package directory (as in interchange/dispatch.go), or put it in a column headed by one", doc, m.line, m.name)
				}
				continue
			}
			path := m.name
			if m.pkg != "" && !strings.Contains(m.name, "/") {
				path = m.pkg + "/" + m.name
			}
			if _, err := os.Stat(root + path); err != nil {
				t.Errorf("%s:%d: names %s, which does not exist", doc, m.line, path)
			}
		}
	}
}

type docRef struct {
	name string // a file name, or a path from the repository's root
	pkg  string // the package directory of the table column it stands in
	line int
}

var (
	codeSpan = regexp.MustCompile("`([^`]+)`")
	goFile   = regexp.MustCompile(`[A-Za-z0-9_./-]+\.go\b`)
	// repoPath: a code span that is a path below one of the repository's
	// top-level directories.
	repoPath = regexp.MustCompile(`^(bench|client|cmd|dashboards|docs|e2e|forwarder|interchange|internal|manager|messages|observability|python|scripts)/[A-Za-z0-9_./-]*$`)
)

// docFileRefs finds the Go files and repository paths a Markdown text
// names in code spans, with the package directory heading the table
// column a name stands in.
func docFileRefs(doc string) []docRef {
	var out []docRef
	var header []string // column headings of the table being read
	lines := strings.Split(doc, "\n")
	for i, line := range lines {
		cells := []string{line}
		var pkgs []string
		if strings.HasPrefix(line, "|") {
			cells = strings.Split(strings.Trim(line, "|"), "|")
			switch {
			case i+1 < len(lines) && strings.HasPrefix(lines[i+1], "|---"):
				header = cells
			case strings.HasPrefix(line, "|---"):
			default:
				for c := range cells {
					p := ""
					if c < len(header) {
						h := strings.TrimSpace(header[c])
						if st, err := os.Stat("../../" + h); err == nil && st.IsDir() && h != "" {
							p = h
						}
					}
					pkgs = append(pkgs, p)
				}
			}
		} else {
			header = nil
		}
		for c, cell := range cells {
			pkg := ""
			if c < len(pkgs) {
				pkg = pkgs[c]
			}
			for _, span := range codeSpan.FindAllStringSubmatch(cell, -1) {
				s := span[1]
				if repoPath.MatchString(s) && !strings.HasSuffix(s, ".go") {
					out = append(out, docRef{name: strings.TrimSuffix(s, "/"), line: i + 1})
					continue
				}
				for _, f := range goFile.FindAllString(s, -1) {
					out = append(out, docRef{name: f, pkg: pkg, line: i + 1})
				}
			}
		}
	}
	return out
}
