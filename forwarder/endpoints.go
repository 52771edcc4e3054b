package forwarder

import (
	"encoding/json"
	"sort"
	"time"

	"github.com/switchyard-hpc/switchyard/messages"
)

// EndpointView is what GET /v1/endpoints/{ep} returns.
type EndpointView struct {
	EndpointID    string     `json:"endpoint_id"`
	Connected     bool       `json:"connected"`
	LastHeartbeat *time.Time `json:"last_heartbeat"`
	Managers      uint32     `json:"managers"`
	Workers       uint32     `json:"workers"`
	IdleWorkers   uint32     `json:"idle_workers"`
	Queued        uint32     `json:"queued"`
	// QueuedByOwner is Queued per task owner; users who may not manage the
	// endpoint see only their own.
	QueuedByOwner map[string]uint32 `json:"queued_by_owner"`
	Outstanding   uint32            `json:"outstanding"`
	ServingState  string            `json:"serving_state"`
	// Held is the number of tasks the forwarder holds for this endpoint.
	Held            int    `json:"held_by_forwarder"`
	Hostname        string `json:"hostname,omitempty"`
	SoftwareVersion string `json:"software_version,omitempty"`
	LostReason      string `json:"lost_reason,omitempty"`
	// Owner created the endpoint; MultiUser runs each user's tasks as her
	// own account. SharedWith is shown to the owner and admins only.
	Owner      string        `json:"owner,omitempty"`
	MultiUser  bool          `json:"multi_user,omitempty"`
	SharedWith *ShareRequest `json:"shared_with,omitempty"`
	// Blocks are the endpoint's batch jobs of managers, as its interchange
	// reports them (absent without a provider).
	Blocks json.RawMessage `json:"blocks,omitempty"`
	// ManagerList is the endpoint's managers as its interchange last
	// listed them (an interchange that predates it sends none).
	ManagerList json.RawMessage `json:"manager_list,omitempty"`
}

func (f *Forwarder) publish(ep *endpoint) {
	v := EndpointView{
		EndpointID:      ep.id,
		Connected:       ep.connected,
		Managers:        ep.report.Managers,
		Workers:         ep.report.Workers,
		IdleWorkers:     ep.report.IdleWorkers,
		Queued:          ep.report.Queued,
		Outstanding:     ep.report.Outstanding,
		ServingState:    ep.report.ServingState.String(),
		Held:            ep.pending.Len(),
		Hostname:        ep.reg.Hostname,
		SoftwareVersion: ep.reg.SoftwareVersion,
		LostReason:      ep.lostReason,
	}
	if len(ep.report.Blocks) > 0 {
		v.Blocks = json.RawMessage(ep.report.Blocks)
	}
	if len(ep.report.ManagerList) > 0 {
		v.ManagerList = json.RawMessage(ep.report.ManagerList)
	}
	v.QueuedByOwner = make(map[string]uint32, len(ep.report.QueuedByOwner))
	for _, o := range ep.report.QueuedByOwner {
		v.QueuedByOwner[o.Owner] += o.N
	}
	if !ep.LastSeen.IsZero() {
		t := ep.LastSeen.UTC()
		v.LastHeartbeat = &t
	}
	f.viewMu.Lock()
	f.views[ep.id] = v
	f.viewMu.Unlock()
}

// neverConnected is the view of a created endpoint the loop has not seen.
func neverConnected(id string) EndpointView {
	return EndpointView{EndpointID: id, ServingState: messages.NonePaused.String(), LostReason: "never connected",
		QueuedByOwner: map[string]uint32{}}
}

// Endpoint returns the view of one endpoint.
func (f *Forwarder) Endpoint(id string) (EndpointView, bool) {
	f.viewMu.RLock()
	v, ok := f.views[id]
	f.viewMu.RUnlock()
	if !ok {
		if f.enrolled.has(id) {
			return neverConnected(id), true
		}
	}
	return v, ok
}

// Endpoints returns every endpoint the forwarder knows (created, or with
// tasks), by id.
func (f *Forwarder) Endpoints() []EndpointView {
	f.viewMu.RLock()
	out := make([]EndpointView, 0, len(f.views))
	for _, v := range f.views {
		out = append(out, v)
	}
	for _, id := range f.enrolled.ids() {
		if _, ok := f.views[id]; !ok {
			out = append(out, neverConnected(id))
		}
	}
	f.viewMu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].EndpointID < out[j].EndpointID })
	return out
}
