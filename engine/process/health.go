package process

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// HTTPHealth returns a HealthFunc that GETs baseURL+path: a 2xx answer is ready, 503 is
// alive but not ready (an engine still loading its model), anything else is an error. It
// uses its own client without keep-alives or proxies, so checks leave no idle connections.
func HTTPHealth(path string) HealthFunc {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	return func(ctx context.Context, baseURL string) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+path, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		defer func() { _ = resp.Body.Close() }()
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return true, nil
		case resp.StatusCode == http.StatusServiceUnavailable:
			return false, nil
		default:
			return false, fmt.Errorf("health: %s answered %s", req.URL, resp.Status)
		}
	}
}
