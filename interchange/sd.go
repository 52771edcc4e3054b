package interchange

import "encoding/json"

// SDTarget is one entry of GET /sd, Prometheus's HTTP service discovery
// format: each manager that reported an HTTP address, labelled with its
// id and block.
type SDTarget struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

func (ix *Interchange) scrapeTargets() []SDTarget {
	out := []SDTarget{}
	for _, m := range ix.Status().ManagerList {
		if m.HTTPAddr == "" {
			continue
		}
		// endpoint and component as the dashboard and scripts/prometheus.yml
		// label every daemon.
		l := map[string]string{"manager_id": m.ID, "endpoint": ix.opts.EndpointID, "component": "manager"}
		if m.BlockID != "" {
			l["block_id"] = m.BlockID
		}
		out = append(out, SDTarget{Targets: []string{m.HTTPAddr}, Labels: l})
	}
	return out
}

// EPManager is one manager in the manager_list the interchange sends the
// forwarder for GET /v1/endpoints/{ep}.
type EPManager struct {
	ID          string `json:"manager_id"`
	Hostname    string `json:"hostname"`
	BlockID     string `json:"block_id,omitempty"`
	Workers     uint32 `json:"workers"`
	IdleWorkers uint32 `json:"idle_workers"`
	Draining    bool   `json:"draining"`
	LastSeen    string `json:"last_seen"`
}

// managerListJSON is the loop's managers for the status report.
func managerListJSON(v []ManagerView) []byte {
	ms := make([]EPManager, len(v))
	for i, m := range v {
		ms[i] = EPManager{ID: m.ID, Hostname: m.Hostname, BlockID: m.BlockID, Workers: m.Workers, IdleWorkers: m.IdleWorkers,
			Draining: m.Draining, LastSeen: m.LastSeen.Format("2006-01-02T15:04:05.000Z07:00")}
	}
	raw, _ := json.Marshal(ms)
	return raw
}
