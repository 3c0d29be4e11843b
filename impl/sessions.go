package impl

import (
	"context"

	"github.com/orchestratord/orchestratord/gen/api"
)

// GetSession returns a session's metadata; unknown or expired sessions are 404.
func (s *Server) GetSession(ctx context.Context, req api.GetSessionRequestObject) (api.GetSessionResponseObject, error) {
	info, ok := s.opts.Sessions.Get(req.Id.String())
	if !ok {
		return nil, Errorf("NOT_FOUND", "session not found (unknown or expired)")
	}
	return api.GetSession200JSONResponse{
		Body: api.SessionInfo{
			TtlMsRemaining: info.TTLRemaining.Milliseconds(), Turns: int32(info.Turns),
			KvBytes: info.KVBytes, KvWarmth: info.KVWarm, TokensBudgetRemaining: info.TokensBudgetRemaining,
		},
		Headers: api.GetSession200ResponseHeaders{XCorrelationId: CorrelationID(ctx)},
	}, nil
}

// DeleteSession forgets a session (idempotent).
func (s *Server) DeleteSession(ctx context.Context, req api.DeleteSessionRequestObject) (api.DeleteSessionResponseObject, error) {
	s.opts.Sessions.Delete(req.Id.String())
	return api.DeleteSession204Response{Headers: api.DeleteSession204ResponseHeaders{XCorrelationId: CorrelationID(ctx)}}, nil
}
