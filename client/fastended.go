package client

import (
	"bytes"
	"strings"
)

// fastIDs reads {"task_ids":["…",…]} as the forwarder writes it, like
// fastEnded.
func fastIDs(b []byte) ([]string, bool) {
	s := scanner{s: string(bytes.TrimSpace(b)), ok: true}
	s.lit(`{"task_ids":[`)
	ids := s.strs()
	s.lit(`]}`)
	if ids == nil {
		ids = []string{}
	}
	return ids, s.ok && s.i == len(s.s)
}

// fastEnded reads an ended page as the forwarder writes it, with one
// string for all of it; anything else is left to encoding/json (ok false).
// A page of thousands of ends is most of what a waiting client reads.
func fastEnded(b []byte) (Ended, bool) {
	var e Ended
	b = bytes.TrimSpace(b)
	s := scanner{s: string(b), ok: true}
	s.lit(`{"cursor":`)
	e.Cursor = s.str()
	s.lit(`,"tasks":[`)
	e.Tasks = s.endedTasks()
	s.lit(`],"more":`)
	e.More = s.boolean()
	if s.peek(',') {
		s.lit(`,"reset":`)
		e.Reset = s.boolean()
	}
	s.lit(`}`)
	return e, s.ok && s.i == len(s.s)
}

// fastCensus reads a census answer as the forwarder writes it, like
// fastEnded.
func fastCensus(b []byte) (Census, bool) {
	var c Census
	b = bytes.TrimSpace(b)
	s := scanner{s: string(b), ok: true}
	s.lit(`{"ended":[`)
	c.Ended = s.endedTasks()
	s.lit(`],"unknown":[`)
	c.Unknown = s.strs()
	s.lit(`],"pending":`)
	c.Pending = s.count()
	s.lit(`}`)
	return c, s.ok && s.i == len(s.s)
}

// endedTasks reads {"task_id":…,"state":…} objects up to a closing ].
func (s *scanner) endedTasks() []EndedTask {
	if !s.ok || s.peek(']') {
		return nil
	}
	out := make([]EndedTask, 0, strings.Count(s.s[s.i:], `{"task_id":`))
	for s.ok {
		var t EndedTask
		s.lit(`{"task_id":`)
		t.TaskID = s.str()
		s.lit(`,"state":`)
		t.State = s.str()
		s.lit(`}`)
		out = append(out, t)
		if !s.peek(',') {
			break
		}
		s.i++
	}
	return out
}

// strs reads strings separated by commas up to a closing ].
func (s *scanner) strs() []string {
	if !s.ok || s.peek(']') {
		return nil
	}
	out := make([]string, 0, strings.Count(s.s[s.i:], ",")+1)
	out = append(out, s.str())
	for s.peek(',') {
		s.i++
		out = append(out, s.str())
	}
	return out
}

// scanner reads JSON of a known layout; ok turns false at the first
// surprise and stays so.
type scanner struct {
	s  string
	i  int
	ok bool
}

func (s *scanner) lit(x string) {
	if s.ok && strings.HasPrefix(s.s[s.i:], x) {
		s.i += len(x)
	} else {
		s.ok = false
	}
}

func (s *scanner) peek(c byte) bool { return s.ok && s.i < len(s.s) && s.s[s.i] == c }

// str reads a string of printable ASCII without escapes.
func (s *scanner) str() string {
	if !s.peek('"') {
		s.ok = false
		return ""
	}
	start := s.i + 1
	for i := start; i < len(s.s); i++ {
		switch c := s.s[i]; {
		case c == '"':
			s.i = i + 1
			return s.s[start:i]
		case c < 0x20 || c >= 0x7f || c == '\\':
			s.ok = false
			return ""
		}
	}
	s.ok = false
	return ""
}

// count reads a non-negative integer of at most 9 digits, no leading zero.
func (s *scanner) count() int {
	start, n := s.i, 0
	for s.ok && s.i < len(s.s) && s.s[s.i] >= '0' && s.s[s.i] <= '9' && s.i-start < 9 {
		n = n*10 + int(s.s[s.i]-'0')
		s.i++
	}
	if s.i == start || (s.s[start] == '0' && s.i > start+1) {
		s.ok = false
	}
	return n
}

func (s *scanner) boolean() bool {
	if s.peek('t') {
		s.lit("true")
		return true
	}
	s.lit("false")
	return false
}
