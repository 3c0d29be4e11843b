package impl

import (
	"context"

	"github.com/orchestratord/orchestratord/gen/api"
)

// errSessionNotFound answers for an unknown, expired or another key's session alike, so that
// a session id tells another key nothing.
func errSessionNotFound() *Error {
	return Errorf("NOT_FOUND", "session not found (unknown or expired)")
}

// GetSession returns a session's metadata; unknown, expired and other keys' sessions are 404.
func (s *Server) GetSession(ctx context.Context, req api.GetSessionRequestObject) (api.GetSessionResponseObject, error) {
	info, ok := s.opts.Sessions.Get(req.Id.String())
	if !ok || info.Owner != callerKey(ctx).Name {
		return nil, errSessionNotFound()
	}
	return api.GetSession200JSONResponse{
		Body: api.SessionInfo{
			TtlMsRemaining: info.TTLRemaining.Milliseconds(), Turns: int32(info.Turns),
			KvBytes: info.KVBytes, KvWarmth: info.KVWarm, TokensBudgetRemaining: info.TokensBudgetRemaining,
		},
		Headers: api.GetSession200ResponseHeaders{XCorrelationId: CorrelationID(ctx)},
	}, nil
}

// DeleteSession forgets one of the caller's sessions (idempotent). Another key's session is
// left alone and answered as an unknown one is, with 204: a 404 there would tell that key the
// id is in use.
func (s *Server) DeleteSession(ctx context.Context, req api.DeleteSessionRequestObject) (api.DeleteSessionResponseObject, error) {
	s.opts.Sessions.Delete(req.Id.String(), callerKey(ctx).Name)
	return api.DeleteSession204Response{Headers: api.DeleteSession204ResponseHeaders{XCorrelationId: CorrelationID(ctx)}}, nil
}
