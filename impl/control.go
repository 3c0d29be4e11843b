package impl

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/internal/textclip"
)

// APIVersion is the contract's info.version.
const APIVersion = "1.0.0"

// GetCapabilities lists the engines and pools this daemon serves and the GPUs it sees.
func (s *Server) GetCapabilities(ctx context.Context, _ api.GetCapabilitiesRequestObject) (api.GetCapabilitiesResponseObject, error) {
	views := s.opts.Pools.Views()
	body := api.Capabilities{ApiVersion: APIVersion, Engines: []api.EngineCapability{}, Pools: []api.PoolCapability{}}
	byEngine := map[string]int{}
	maxOut := int32(32768)
	if s.opts.Engines != nil {
		// Every engine built in, used by a pool or not, with what its driver serves.
		for _, d := range s.opts.Engines.All() {
			byEngine[d.Name] = len(body.Engines)
			ws := make([]api.Workload, len(d.Workloads))
			for i, w := range d.Workloads {
				ws[i] = api.Workload(w)
			}
			body.Engines = append(body.Engines, api.EngineCapability{Engine: api.Engine(d.Name), MaxTokensOut: &maxOut,
				SupportedWorkloads: ws, Managed: d.Managed != nil})
		}
	}
	for _, v := range views {
		// The pool's configured capacity: its slots per replica times its replicas, as pool
		// health's slots_total counts them when every replica is ready.
		slots := int32(v.Slots * max(len(v.Replicas), 1))
		pc := api.PoolCapability{
			PoolId: v.ID, Engine: api.Engine(v.Engine), ModelRef: v.ModelRef, ModelId: v.ModelID,
			CtxMax: int32(v.CtxMax), Slots: slots, Ready: v.Ready(), Draining: v.Draining,
		}
		if v.EngineVersion != "" {
			ver := v.EngineVersion
			pc.EngineVersion = &ver
		}
		body.Pools = append(body.Pools, pc)
		i, ok := byEngine[v.Engine]
		if !ok { // a pool of an engine the registry does not list (tests without a registry)
			i = len(body.Engines)
			byEngine[v.Engine] = i
			body.Engines = append(body.Engines, api.EngineCapability{Engine: api.Engine(v.Engine), MaxTokensOut: &maxOut, SupportedWorkloads: []api.Workload{}})
		}
		ec := &body.Engines[i]
		ec.CtxMax = max(ec.CtxMax, int32(v.CtxMax))
		ec.Slots += slots
		if s.opts.Engines == nil {
			for _, w := range v.Workloads {
				if !slices.Contains(ec.SupportedWorkloads, api.Workload(w)) {
					ec.SupportedWorkloads = append(ec.SupportedWorkloads, api.Workload(w))
				}
			}
		}
	}
	body.Gpus = api.GpuInventory{Devices: []api.GpuDevice{}}
	if s.opts.GPUs != nil {
		inv := s.opts.GPUs.Snapshot(ctx)
		body.Gpus.Available = inv.Available
		if inv.Reason != "" {
			body.Gpus.Reason = &inv.Reason
		}
		if inv.Driver != "" {
			body.Gpus.Driver = &inv.Driver
		}
		for _, d := range inv.Devices {
			gd := api.GpuDevice{Index: int32(d.Index), Name: d.Name, MemoryTotalBytes: int64(d.MemoryTotal), MemoryUsedBytes: int64(d.MemoryUsed)}
			util := int32(min(d.UtilizationPct, 100))
			gd.UtilizationPct = &util
			if d.UUID != "" {
				u := d.UUID
				gd.Uuid = &u
			}
			body.Gpus.Devices = append(body.Gpus.Devices, gd)
		}
	} else {
		reason := "GPU inventory disabled"
		body.Gpus.Reason = &reason
	}
	return api.GetCapabilities200JSONResponse{Body: body, Headers: api.GetCapabilities200ResponseHeaders{XCorrelationId: CorrelationID(ctx)}}, nil
}

// GetPoolHealth reports one pool's health.
func (s *Server) GetPoolHealth(ctx context.Context, req api.GetPoolHealthRequestObject) (api.GetPoolHealthResponseObject, error) {
	v, ok := s.opts.Pools.Get(req.Id)
	if !ok {
		return nil, Errorf("NOT_FOUND", "pool %q not found", req.Id)
	}
	body := api.PoolHealth{
		PoolId: v.ID, Live: v.Live, Ready: v.Ready(), Draining: v.Draining,
		ModelRef: &v.ModelRef, ModelId: &v.ModelID,
		Metrics: api.PoolHealth_Metrics{SlotsTotal: int32(v.SlotsTotal())},
	}
	// Busy slots have one owner, the admission queue: the pool's and its replicas' are read
	// there in one snapshot, so that they agree (the pool's is the replicas' sum plus the slots
	// granted to tasks not yet, or no longer, on a replica).
	perReplica := make(map[string]int, len(v.Replicas))
	body.Metrics.SlotsBusy = int32(s.opts.Tasks.Busy(v.ID, perReplica))
	reps := make([]api.ReplicaHealth, 0, len(v.Replicas))
	for _, r := range v.Replicas {
		r.Busy = perReplica[r.ID]
		reps = append(reps, replicaHealth(r))
	}
	body.Replicas = &reps
	if st, err := s.opts.Tasks.Stats(ctx); err == nil {
		if ps, ok := st.Pools[v.ID]; ok {
			body.Metrics.QueueDepth = int32(ps.QueuedInteractive + ps.QueuedBatch)
			ms, tps := ps.MeanServiceMs, ps.TokensPerS
			body.Metrics.MeanServiceMs, body.Metrics.TokensPerS = &ms, &tps
		}
	}
	if v.LastError != "" {
		body.LastError = &v.LastError
	}
	return api.GetPoolHealth200JSONResponse{Body: body, Headers: api.GetPoolHealth200ResponseHeaders{XCorrelationId: CorrelationID(ctx)}}, nil
}

// DrainPool stops admission to a pool.
func (s *Server) DrainPool(ctx context.Context, req api.DrainPoolRequestObject) (api.DrainPoolResponseObject, error) {
	if req.Body == nil {
		return nil, Errorf("INVALID_PARAMS", "body: a JSON DrainRequest is required")
	}
	if err := s.opts.Pools.Drain(req.Id, time.Duration(req.Body.DeadlineMs)*time.Millisecond); err != nil {
		return nil, err
	}
	s.opts.Metrics.DrainEvents.WithLabelValues(req.Id, "api_request").Inc()
	return api.DrainPool202JSONResponse{
		Body:    api.DrainResponse{Status: api.DrainResponseStatusDraining, DeadlineMs: req.Body.DeadlineMs},
		Headers: api.DrainPool202ResponseHeaders{XCorrelationId: CorrelationID(ctx)},
	}, nil
}

// replicaHealth is one replica as pool health shows it.
func replicaHealth(r pool.ReplicaView) api.ReplicaHealth {
	rh := api.ReplicaHealth{Id: r.ID, Managed: r.Managed, State: api.ReplicaHealthState(r.State),
		SlotsBusy: int32(r.Busy), SlotsTotal: int32(r.Slots), Breaker: api.ReplicaHealthBreaker(r.Breaker.String()),
		Restarts: int32(r.Restarts)}
	if r.URL != "" {
		u := r.URL
		rh.Url = &u
	}
	if r.HasEngineLoad {
		q, kv := int32(r.EngineLoad.Waiting), r.EngineLoad.KVUsage
		rh.QueueDepth, rh.KvUsage = &q, &kv
	}
	if len(r.Devices) > 0 {
		ds := make([]int32, len(r.Devices))
		for i, d := range r.Devices {
			ds[i] = int32(d)
		}
		rh.Devices = &ds
	}
	if r.LastError != "" {
		e := r.LastError
		rh.LastError = &e
	}
	return rh
}

// DrainReplica stops placement on one replica of a pool; its running tasks may finish until
// the deadline.
func (s *Server) DrainReplica(ctx context.Context, req api.DrainReplicaRequestObject) (api.DrainReplicaResponseObject, error) {
	if req.Body == nil {
		return nil, Errorf("INVALID_PARAMS", "body: a JSON DrainRequest is required")
	}
	if err := s.opts.Pools.DrainReplica(req.Id, req.ReplicaId, time.Duration(req.Body.DeadlineMs)*time.Millisecond); err != nil {
		return nil, err
	}
	s.opts.Metrics.DrainEvents.WithLabelValues(req.Id, "replica_api_request").Inc()
	return api.DrainReplica202JSONResponse{
		Body:    api.DrainResponse{Status: api.DrainResponseStatusDraining, DeadlineMs: req.Body.DeadlineMs},
		Headers: api.DrainReplica202ResponseHeaders{XCorrelationId: CorrelationID(ctx)},
	}, nil
}

// ResumeReplica ends a replica's drain.
func (s *Server) ResumeReplica(ctx context.Context, req api.ResumeReplicaRequestObject) (api.ResumeReplicaResponseObject, error) {
	r, err := s.opts.Pools.ResumeReplica(req.Id, req.ReplicaId)
	if err != nil {
		return nil, err
	}
	return api.ResumeReplica200JSONResponse{
		Body:    replicaHealth(r),
		Headers: api.ResumeReplica200ResponseHeaders{XCorrelationId: CorrelationID(ctx)},
	}, nil
}

// ReloadPool switches a managed pool to another model, or rolls back.
func (s *Server) ReloadPool(ctx context.Context, req api.ReloadPoolRequestObject) (api.ReloadPoolResponseObject, error) {
	if req.Body == nil {
		return nil, Errorf("INVALID_PARAMS", "body: a JSON ReloadRequest is required")
	}
	ref := req.Body.NewModelRef
	cur, ok := s.opts.Pools.Get(req.Id)
	if !ok {
		return nil, pool.ErrNotFound
	}
	// Confine the path before anything starts: an engine given an arbitrary file echoes its
	// first bytes, and whether it exists, in its output. (External pools answer 409 below.)
	if cur.HasManaged() {
		if s.opts.Models == nil {
			return nil, Errorf("INVALID_PARAMS", "new_model_ref: no models_dirs are configured")
		}
		if _, err := s.opts.Models.ResolveModel(ref); err != nil {
			return nil, Errorf("INVALID_PARAMS", "new_model_ref: %v", err)
		}
	}
	v, err := s.opts.Pools.Reload(ctx, req.Id, ref)
	var re *pool.ReloadError
	switch {
	case errors.Is(err, pool.ErrNotFound):
		return nil, err
	case errors.As(err, &re):
		reason, msg := api.ReloadResponseReason(re.Reason), textclip.Clip(re.Message, maxMessage)
		return api.ReloadPool409JSONResponse{
			Body: api.ReloadResponse{Status: api.Rollback, PoolId: req.Id, ModelRef: &v.ModelRef, ModelId: &v.ModelID,
				Reason: &reason, Message: &msg},
			Headers: api.ReloadPool409ResponseHeaders{XCorrelationId: CorrelationID(ctx)},
		}, nil
	case err != nil:
		s.log.ErrorContext(ctx, "reload failed", "pool_id", req.Id, "err", err)
		return nil, Errorf("INTERNAL", "internal error")
	}
	s.opts.Metrics.ModelState.WithLabelValues(v.ModelID, "Active").Set(1)
	if cur.ModelID != v.ModelID && !slices.ContainsFunc(s.opts.Pools.Views(), func(p pool.View) bool { return p.ModelID == cur.ModelID }) {
		// No pool serves the old model any more: its series goes (one per model ever served
		// would stay at 1 otherwise).
		s.opts.Metrics.ModelState.DeleteLabelValues(cur.ModelID, "Active")
	}
	return api.ReloadPool200JSONResponse{
		Body:    api.ReloadResponse{Status: api.Reloaded, PoolId: req.Id, ModelRef: &v.ModelRef, ModelId: &v.ModelID},
		Headers: api.ReloadPool200ResponseHeaders{XCorrelationId: CorrelationID(ctx)},
	}, nil
}
