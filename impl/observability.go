package impl

import (
	"bytes"
	"context"
	"net/http"

	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/metrics"
)

// GetMetrics serves the Prometheus text exposition, including # TYPE lines of series without
// samples yet.
func (s *Server) GetMetrics(ctx context.Context, _ api.GetMetricsRequestObject) (api.GetMetricsResponseObject, error) {
	if s.opts.BeforeScrape != nil {
		s.opts.BeforeScrape(ctx)
	}
	var buf bytes.Buffer
	if err := s.opts.Metrics.WriteText(&buf, s.opts.Gatherer); err != nil {
		return nil, err
	}
	return metricsResponse{body: buf.Bytes(), correlation: CorrelationID(ctx)}, nil
}

// metricsResponse sets Prometheus's exact content type (the generated type would send a bare
// text/plain).
type metricsResponse struct {
	body        []byte
	correlation string
}

func (r metricsResponse) VisitGetMetricsResponse(w http.ResponseWriter) error {
	w.Header().Set("Content-Type", metrics.ContentType)
	w.Header().Set(HeaderCorrelationID, r.correlation)
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(r.body)
	return err
}

// GetOpenAPI serves the contract.
func (s *Server) GetOpenAPI(ctx context.Context, _ api.GetOpenAPIRequestObject) (api.GetOpenAPIResponseObject, error) {
	return specResponse{body: s.opts.SpecJSON, correlation: CorrelationID(ctx)}, nil
}

type specResponse struct {
	body        []byte
	correlation string
}

func (r specResponse) VisitGetOpenAPIResponse(w http.ResponseWriter) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(HeaderCorrelationID, r.correlation)
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(r.body)
	return err
}
