package forwarder

import (
	"bytes"
	"encoding/json"
)

// listItems finds the list under key name in obj, a JSON object the
// decoder has already checked, and returns its items; it is one pass where
// unmarshalling into a map and then a slice is four. ok is false when it
// cannot answer (an escaped key, no such key, a value that is not a list)
// and the caller should take the general path, which says what is wrong.
func listItems(obj []byte, name string) (items []json.RawMessage, ok bool) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return nil, false
	}
	i++
	var found []byte
	for {
		i = skipSpace(obj, i)
		if i >= len(obj) {
			return nil, false
		}
		if obj[i] == '}' {
			break
		}
		if obj[i] == ',' {
			i++
			continue
		}
		if obj[i] != '"' {
			return nil, false
		}
		end := stringEnd(obj, i)
		if end < 0 {
			return nil, false
		}
		key := obj[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return nil, false
		}
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return nil, false
		}
		i = skipSpace(obj, i+1)
		vend := valueEnd(obj, i)
		if vend < 0 {
			return nil, false
		}
		if string(key) == name {
			found = obj[i:vend] // the last one wins, as in encoding/json
		}
		i = vend
	}
	if len(found) == 0 || found[0] != '[' {
		return nil, false
	}
	items = []json.RawMessage{}
	j := skipSpace(found, 1)
	for j < len(found) && found[j] != ']' {
		if found[j] == ',' {
			j = skipSpace(found, j+1)
			continue
		}
		end := valueEnd(found, j)
		if end < 0 {
			return nil, false
		}
		items = append(items, found[j:end])
		j = skipSpace(found, end)
	}
	return items, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd is the index after the string that starts at b[i] == '"'.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd is the index after the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := stringEnd(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	return j
}
