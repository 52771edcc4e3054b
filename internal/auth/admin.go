package auth

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/switchyard-hpc/switchyard/internal/httpx"
)

// Admin is the admin HTTP of an interchange or a manager: GET /status,
// /healthz and /metrics, /servingState and, when asked, the profiler.
// Every path but /healthz and /metrics needs the daemon's own token,
// unless it runs --insecure.
type Admin struct {
	Kind     string // "interchange" or "manager"
	Status   func() any
	Health   func() map[string]any
	Registry prometheus.Gatherer
	Serving  http.HandlerFunc
	Pprof    bool
	Token    string
	Insecure bool
	// SD, when set, serves GET /sd: Prometheus HTTP service discovery.
	SD func() any
}

// Handler builds the admin HTTP handler.
func (a Admin) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		h := a.Health()
		h["ok"] = true
		httpx.WriteJSON(w, http.StatusOK, h)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/servingState", a.Serving)
	if a.SD != nil {
		mux.HandleFunc("GET /sd", func(w http.ResponseWriter, r *http.Request) {
			httpx.WriteJSON(w, http.StatusOK, a.SD())
		})
	}
	if a.Pprof {
		httpx.MountPprof(mux)
	}
	mux.HandleFunc("/", httpx.AdminNotFound(a.Kind))
	if a.Insecure {
		return httpx.Identify(a.Kind, mux)
	}
	return httpx.Identify(a.Kind, Require(Single(a.Token), mux, nil))
}

// SetupDaemonToken reads or makes a daemon's admin HTTP token
// (STATE_DIR/admin.token, 0600; in memory only without a state dir) and
// logs what an operator needs to know about it.
func SetupDaemonToken(dir string, insecure bool, log *logrus.Entry) (string, error) {
	tok, path, created, err := DaemonToken(dir)
	if err != nil {
		return "", err
	}
	if insecure {
		log.Warn("--insecure: the admin HTTP takes requests without a token")
	}
	switch {
	case path == "":
		log.Info("admin HTTP token kept in memory (no --state-dir): only /healthz and /metrics are reachable from outside")
	case created:
		log.WithField("path", path).Info("admin HTTP token created")
	}
	return tok, nil
}
