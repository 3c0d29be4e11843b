package main

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestRelayFlushesEachWrite: a streamed response's first line reaches the client while the
// upstream still holds the second back, and the request reaches the upstream unchanged.
func TestRelayFlushesEachWrite(t *testing.T) {
	release := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/completion" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte("data: one\n\n"))
		w.(http.Flusher).Flush()
		<-release
		_, _ = w.Write([]byte("data: two\n\n"))
	}))
	defer upstream.Close()
	up, _ := url.Parse(upstream.URL)
	proxy := newProxy(up, 4)
	relay := httptest.NewServer(proxy)
	defer relay.Close()
	defer proxy.Transport.(*http.Transport).CloseIdleConnections()

	res, err := http.Post(relay.URL+"/completion", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	br := bufio.NewReader(res.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "data: one\n" {
		t.Fatalf("first line %q, %v (the relay held the first write back)", line, err)
	}
	close(release)
	_, _ = br.ReadString('\n')
	if line, err := br.ReadString('\n'); err != nil || line != "data: two\n" {
		t.Fatalf("second line %q, %v", line, err)
	}
}
