package forwarder

import (
	"bytes"
	"encoding/json"
	"testing"
)

// slowList is what listField does without listItems.
func slowList(obj []byte, name string) ([]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil {
		return nil, false
	}
	v, ok := m[name]
	v = bytes.TrimSpace(v)
	if !ok || len(v) == 0 || v[0] != '[' {
		return nil, false
	}
	var items []json.RawMessage
	if json.Unmarshal(v, &items) != nil {
		return nil, false
	}
	return items, true
}

func checkList(t *testing.T, obj []byte) {
	if !json.Valid(obj) {
		return // listField only sees bodies the decoder accepted
	}
	fast, ok := listItems(obj, "tasks")
	if !ok {
		return
	}
	slow, sok := slowList(obj, "tasks")
	if !sok || len(fast) != len(slow) {
		t.Fatalf("%q: listItems %d items, encoding/json %d (ok %v)", obj, len(fast), len(slow), sok)
	}
	for i := range fast {
		if !bytes.Equal(bytes.TrimSpace(fast[i]), bytes.TrimSpace(slow[i])) {
			t.Fatalf("%q: item %d is %q, encoding/json says %q", obj, i, fast[i], slow[i])
		}
	}
}

func TestListItems(t *testing.T) {
	for _, in := range []string{
		`{"tasks":[{"kind":"noop"},{"kind":"exec","args":["a]","b\"}"]}]}`,
		` { "x" : [1,2] , "tasks" : [ "a" , {"b":[{}]} , 3 , null , true ] } `,
		`{"tasks":[1],"tasks":[2,3]}`,
		`{"tasks":[]}`,
		`{"tasks":{"kind":"noop"}}`,
		`{"ta\u0073ks":[1]}`,
		`{"other":[1]}`,
		`{"tasks":[-1.5e3,"\\"]}`,
	} {
		checkList(t, []byte(in))
	}
	items, ok := listItems([]byte(`{"tasks":[{"kind":"noop"}, {"kind":"python","payload":"AA=="}]}`), "tasks")
	if !ok || len(items) != 2 || string(items[1]) != `{"kind":"python","payload":"AA=="}` {
		t.Fatalf("listItems: %q %v", items, ok)
	}
}

func FuzzListItems(f *testing.F) {
	f.Add([]byte(`{"tasks":[{"kind":"noop"},{"kind":"exec","args":["a]"]}]}`))
	f.Add([]byte(`{"a":{"tasks":[1]},"tasks":[[],{},"x"]}`))
	f.Fuzz(func(t *testing.T, obj []byte) { checkList(t, obj) })
}
