package httpx

import "net/http"

// DaemonHeader names the kind of daemon that answered, so a client pointed
// at the wrong port can say which one it reached.
const DaemonHeader = "Switchyard-Daemon"

// Identify sets DaemonHeader to kind on every answer of h, refusals too.
func Identify(kind string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(DaemonHeader, kind)
		h.ServeHTTP(w, r)
	})
}

// AdminNotFound answers paths an interchange's or manager's admin API does
// not have, saying what it is and where the task API lives.
func AdminNotFound(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		Fail(w, http.StatusNotFound, "no such path %s: this is a%s %s's admin API (GET /status, GET|POST /servingState, GET /metrics, GET /healthz); the task API (/v1/...) is the forwarder's",
			r.URL.Path, article(kind), kind)
	}
}

func article(kind string) string {
	if kind != "" && (kind[0] == 'i' || kind[0] == 'a' || kind[0] == 'e' || kind[0] == 'o' || kind[0] == 'u') {
		return "n"
	}
	return ""
}
