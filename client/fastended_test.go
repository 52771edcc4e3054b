package client

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestFastEndedReadsTheForwardersPage(t *testing.T) {
	b := []byte(`{"cursor":"1a2b-42","tasks":[{"task_id":"5f0c1e2a-0b1c-4d2e-8f90-123456789abc","state":"success"},{"task_id":"x","state":"failed"}],"more":true,"reset":true}` + "\n")
	got, ok := fastEnded(b)
	if !ok {
		t.Fatal("the forwarder's layout was left to encoding/json")
	}
	want := Ended{Cursor: "1a2b-42", More: true, Reset: true, Tasks: []EndedTask{
		{TaskID: "5f0c1e2a-0b1c-4d2e-8f90-123456789abc", State: "success"}, {TaskID: "x", State: "failed"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %+v, want %+v", got, want)
	}
	if _, ok := fastEnded([]byte(`{"cursor":"c","tasks":[],"more":false}`)); !ok {
		t.Fatal("an empty page was left to encoding/json")
	}
	c, ok := fastCensus([]byte(`{"ended":[{"task_id":"a","state":"failed"}],"unknown":["b"],"pending":3}` + "\n"))
	if !ok || len(c.Ended) != 1 || c.Ended[0].State != "failed" || len(c.Unknown) != 1 || c.Pending != 3 {
		t.Fatalf("census read as %+v (fast path %v)", c, ok)
	}
}

// fastEnded reads what encoding/json reads, or leaves it to encoding/json.
func FuzzFastEnded(f *testing.F) {
	f.Add([]byte(`{"cursor":"e-1","tasks":[{"task_id":"a","state":"success"}],"more":false}` + "\n"))
	f.Add([]byte(`{"cursor":"e-1","tasks":[],"more":true,"reset":true}`))
	f.Add([]byte(`{"cursor":"e-1","tasks":[{"task_id":"a\"","state":"s"}],"more":false}`))
	f.Add([]byte(`{"cursor":"e-1","tasks":[{"task_id":"a","state":"s"},],"more":false}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := fastEnded(b)
		if !ok {
			return
		}
		var want Ended
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%q: fast path read %+v, encoding/json refuses it: %v", b, got, err)
		}
		if len(got.Tasks) == 0 && len(want.Tasks) == 0 {
			got.Tasks, want.Tasks = nil, nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast path %+v, encoding/json %+v", b, got, want)
		}
	})
}

// fastCensus reads what encoding/json reads, or leaves it to encoding/json.
func FuzzFastCensus(f *testing.F) {
	f.Add([]byte(`{"ended":[{"task_id":"a","state":"success"}],"unknown":["b","c"],"pending":12}` + "\n"))
	f.Add([]byte(`{"ended":[],"unknown":[],"pending":0}`))
	f.Add([]byte(`{"ended":[],"unknown":[],"pending":012}`))
	f.Add([]byte(`{"ended":[],"unknown":["x",],"pending":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := fastCensus(b)
		if !ok {
			return
		}
		var want Census
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("%q: fast path read %+v, encoding/json refuses it: %v", b, got, err)
		}
		if len(got.Ended) == 0 && len(want.Ended) == 0 {
			got.Ended, want.Ended = nil, nil
		}
		if len(got.Unknown) == 0 && len(want.Unknown) == 0 {
			got.Unknown, want.Unknown = nil, nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast path %+v, encoding/json %+v", b, got, want)
		}
	})
}
