package sdk

import (
	"net/http"
	"testing"
	"time"
)

// TestRetryAfter: both forms of RFC 9110's Retry-After are read; what cannot be read, or a
// date already past, is no wait (the caller's default then applies).
func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 5, 17, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, header string
		want         time.Duration
	}{
		{"absent", "", 0},
		{"seconds", "3", 3 * time.Second},
		{"seconds with spaces", " 2 ", 2 * time.Second},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"huge", "99999999999999", time.Duration(1<<30) * time.Second},
		{"HTTP-date ahead", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"RFC 850 date ahead", now.Add(30 * time.Second).Format("Monday, 02-Jan-06 15:04:05 GMT"), 30 * time.Second},
		{"HTTP-date past", now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"garbage", "soon", 0},
		{"fraction", "1.5", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.header != "" {
				h.Set("Retry-After", tc.header)
			}
			if got := retryAfterAt(h, now); got != tc.want {
				t.Fatalf("Retry-After %q: %v, want %v", tc.header, got, tc.want)
			}
		})
	}
}
