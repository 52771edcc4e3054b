package forwarder

import (
	"encoding/hex"
	"net/http"
	"strconv"

	"github.com/switchyard-hpc/switchyard/messages"
)

// The answers that carry one entry per task are written without
// reflection: they are most of what a busy forwarder encodes. Task ids,
// states and cursors never need escaping; tests compare the bytes with
// encoding/json's.

// writeRaw sends a ready JSON body.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// appendIDs writes {"task_ids":[...]} and a newline, as json.Encoder does.
func appendIDs(b []byte, ids []messages.TaskID) []byte {
	if b == nil {
		b = make([]byte, 0, 20+len(ids)*39)
	}
	b = append(b, `{"task_ids":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendTaskID(b, id)
	}
	return append(b, "]}\n"...)
}

// appendTaskID writes id as a quoted JSON string, as MarshalText does.
func appendTaskID(b []byte, id messages.TaskID) []byte {
	var s [38]byte
	s[0], s[9], s[14], s[19], s[24], s[37] = '"', '-', '-', '-', '-', '"'
	hex.Encode(s[1:9], id[0:4])
	hex.Encode(s[10:14], id[4:6])
	hex.Encode(s[15:19], id[6:8])
	hex.Encode(s[20:24], id[8:10])
	hex.Encode(s[25:37], id[10:])
	return append(b, s[:]...)
}

// appendJSON writes the page as json.Encoder would.
func (p *EndedPage) appendJSON(b []byte) []byte {
	if b == nil {
		b = make([]byte, 0, 64+len(p.Tasks)*(len(`{"task_id":"","state":"waiting-for-endpoint"},`)+36))
	}
	b = append(b, `{"cursor":`...)
	b = strconv.AppendQuote(b, p.Cursor)
	b = append(b, `,"tasks":[`...)
	for i := range p.Tasks {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"task_id":`...)
		b = appendTaskID(b, p.Tasks[i].TaskID)
		b = append(b, `,"state":"`...)
		b = append(b, p.Tasks[i].State...)
		b = append(b, `"}`...)
	}
	b = append(b, `],"more":`...)
	b = strconv.AppendBool(b, p.More)
	if p.Reset {
		b = append(b, `,"reset":true`...)
	}
	return append(b, "}\n"...)
}

// appendJSON writes the census as json.Encoder would; it is as long as
// the ids asked about.
func (v *CensusView) appendJSON(b []byte) []byte {
	if b == nil {
		b = make([]byte, 0, 48+len(v.Ended)*(len(`{"task_id":"","state":"waiting-for-endpoint"},`)+36)+len(v.Unknown)*39)
	}
	b = append(b, `{"ended":[`...)
	for i := range v.Ended {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"task_id":`...)
		b = appendTaskID(b, v.Ended[i].TaskID)
		b = append(b, `,"state":"`...)
		b = append(b, v.Ended[i].State...)
		b = append(b, `"}`...)
	}
	b = append(b, `],"unknown":[`...)
	for i, s := range v.Unknown {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, s)
	}
	b = append(b, `],"pending":`...)
	b = strconv.AppendInt(b, int64(v.Pending), 10)
	return append(b, "}\n"...)
}
