package forwarder

import (
	"net/http"
	"strconv"
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
func appendIDs(b []byte, ids []string) []byte {
	b = append(b, `{"task_ids":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, id)
	}
	return append(b, "]}\n"...)
}

// appendJSON writes the page as json.Encoder would.
func (p *EndedPage) appendJSON(b []byte) []byte {
	b = append(b, `{"cursor":`...)
	b = strconv.AppendQuote(b, p.Cursor)
	b = append(b, `,"tasks":[`...)
	for i := range p.Tasks {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"task_id":`...)
		b = strconv.AppendQuote(b, p.Tasks[i].TaskID)
		b = append(b, `,"state":`...)
		b = strconv.AppendQuote(b, string(p.Tasks[i].State))
		b = append(b, '}')
	}
	b = append(b, `],"more":`...)
	b = strconv.AppendBool(b, p.More)
	if p.Reset {
		b = append(b, `,"reset":true`...)
	}
	return append(b, "}\n"...)
}
