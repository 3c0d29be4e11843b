package impl

import (
	"context"

	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/artifact"
)

// CreateArtifact stores a content-addressed artifact.
func (s *Server) CreateArtifact(ctx context.Context, req api.CreateArtifactRequestObject) (api.CreateArtifactResponseObject, error) {
	b := req.Body
	if b == nil {
		return nil, Errorf("INVALID_PARAMS", "body: a JSON Artifact is required")
	}
	a := artifact.Artifact{Kind: string(b.Kind), Content: b.Content}
	if b.Tags != nil {
		a.Tags = *b.Tags
	}
	if b.Parent != nil {
		a.Parent = *b.Parent
	}
	if b.Metadata != nil {
		a.Metadata = *b.Metadata
	}
	// The generated binding turns every JSON number into float64; the id is defined on the
	// numbers as sent, so take content and metadata from the raw body (already validated).
	if raw := RawBody(ctx); raw != nil {
		v, err := artifact.ParseJSON(raw)
		if err != nil {
			return nil, Errorf("INVALID_PARAMS", "body: %v", err)
		}
		if obj, ok := v.(map[string]any); ok {
			if c, ok := obj["content"].(map[string]any); ok {
				a.Content = c
			}
			if m, ok := obj["metadata"].(map[string]any); ok {
				a.Metadata = m
			}
		}
	}
	ref, err := s.opts.Artifacts.Put(ctx, a)
	if err != nil {
		return nil, err
	}
	return api.CreateArtifact201JSONResponse{
		Body:    api.ArtifactRef{Id: ref.ID, Kind: api.ArtifactKind(ref.Kind), Digest: ref.Digest, CreatedMs: ref.CreatedMs, Tags: optSlice(ref.Tags)},
		Headers: api.CreateArtifact201ResponseHeaders{XCorrelationId: CorrelationID(ctx)},
	}, nil
}

// GetArtifact reads an artifact.
func (s *Server) GetArtifact(ctx context.Context, req api.GetArtifactRequestObject) (api.GetArtifactResponseObject, error) {
	st, err := s.opts.Artifacts.Get(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	body := api.StoredArtifact{
		Id: st.ID, Kind: api.ArtifactKind(st.Kind), Digest: st.Digest, CreatedMs: st.CreatedMs,
		Content: st.Content, Tags: optSlice(st.Tags),
	}
	if body.Content == nil {
		body.Content = map[string]any{}
	}
	if st.Parent != "" {
		p := st.Parent
		body.Parent = &p
	}
	if st.Metadata != nil {
		m := st.Metadata
		body.Metadata = &m
	}
	return api.GetArtifact200JSONResponse{Body: body, Headers: api.GetArtifact200ResponseHeaders{XCorrelationId: CorrelationID(ctx)}}, nil
}

func optSlice(s []string) *[]string {
	if len(s) == 0 {
		return nil
	}
	return &s
}
