package tenant

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	sum := sha256.Sum256([]byte("bob-secret-0123456789"))
	good := `keys:
  - {name: alice, key: alice-secret-0123456789, scopes: [tasks, sessions], weight: 3, rpm: 30, tpm: 1000, max_priority: batch, token_budget: 5000, max_streams: 4}
  - {name: bob, key_sha256: ` + hex.EncodeToString(sum[:]) + `, scopes: [tasks]}
`
	keys, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Name != "alice" || keys[0].Weight != 3 || keys[0].RPM != 30 || keys[0].TPM != 1000 ||
		keys[0].TokenBudget != 5000 || keys[0].MaxStreams != 4 || keys[0].MaxPriority != "batch" || !keys[0].Has(ScopeSessions) || keys[0].Has(ScopeControl) {
		t.Fatalf("alice = %+v", keys[0])
	}
	if keys[1].Weight != 1 || keys[1].Digest != sum || keys[1].MaxStreams != 0 {
		t.Fatalf("bob = %+v", keys[1])
	}
	for name, tc := range map[string]struct{ doc, want string }{
		"empty":          {"keys: []", "at least one key"},
		"unknown field":  {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks], burst: 3}]", "burst"},
		"bad name":       {"keys: [{name: 'a b', key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks]}]", "keys[0].name"},
		"reserved name":  {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks]}, {name: default, key: bbbbbbbbbbbbbbbbbbbb, scopes: [tasks]}]", "keys[1].name: \"default\" is reserved"},
		"duplicate name": {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks]}, {name: a, key: bbbbbbbbbbbbbbbbbbbb, scopes: [tasks]}]", "used twice"},
		"duplicate key":  {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks]}, {name: b, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks]}]", "keys[1].key"},
		"short key":      {"keys: [{name: a, key: short, scopes: [tasks]}]", "too short"},
		"both":           {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, key_sha256: ab, scopes: [tasks]}]", "not both"},
		"neither":        {"keys: [{name: a, scopes: [tasks]}]", "required"},
		"bad digest":     {"keys: [{name: a, key_sha256: xyz, scopes: [tasks]}]", "64 hex"},
		"no scopes":      {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa}]", "scopes"},
		"unknown scope":  {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [root]}]", `"root"`},
		"zero weight":    {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks], weight: 0}]", "weight"},
		"negative rpm":   {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks], rpm: -1}]", "keys[0].rpm: must not be negative"},
		"negative tpm":   {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks], tpm: -1}]", "keys[0].tpm: must not be negative"},
		"negative max_streams": {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks], max_streams: -1}]",
			"keys[0].max_streams: must not be negative"},
		"fractional max_streams": {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks], max_streams: 1.5}]", "want a whole number"},
		"negative budget": {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks], token_budget: -5}]",
			"keys[0].token_budget: must not be negative"},
		"NaN weight":      {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks], weight: .nan}]", "keys[0].weight"},
		"infinite weight": {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks], weight: .inf}]", "keys[0].weight"},
		"bad priority":    {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks], max_priority: urgent}]", "max_priority"},
		// A second document's keys would be ignored: their clients would get 401s.
		"second document": {"keys: [{name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [tasks]}]\n---\nkeys: [{name: b, key: bbbbbbbbbbbbbbbbbbbb, scopes: [tasks]}]\n",
			"more than one YAML document"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestRingLookupAndReplace(t *testing.T) {
	a := Key{Name: "alice", Digest: sha256.Sum256([]byte("alice-secret-0123456789")), Scopes: []Scope{ScopeTasks}}
	b := PlainKey("plain-secret-0123456789")
	r := NewRing([]Key{a, b})
	for _, tc := range []struct {
		secret, want string
	}{
		{"alice-secret-0123456789", "alice"},
		{"plain-secret-0123456789", DefaultName},
		{"alice-secret-012345678", ""},
		{"", ""},
	} {
		k, ok := r.Lookup(tc.secret)
		if got := ""; ok {
			got = k.Name
			if got != tc.want {
				t.Errorf("Lookup(%q) = %q, want %q", tc.secret, got, tc.want)
			}
		} else if tc.want != "" {
			t.Errorf("Lookup(%q) found nothing, want %q", tc.secret, tc.want)
		}
	}
	held, _ := r.Lookup("alice-secret-0123456789")
	r.Replace([]Key{b})
	if _, ok := r.Lookup("alice-secret-0123456789"); ok {
		t.Fatal("a removed key still matches")
	}
	if held.Name != "alice" || !held.Has(ScopeTasks) {
		t.Fatal("a key held across a reload changed")
	}
	if got := r.Names(); len(got) != 1 || got[0] != DefaultName {
		t.Fatalf("Names = %v", got)
	}
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func window(ws []Window, l Limit) (Window, bool) {
	for _, w := range ws {
		if w.Limit == l {
			return w, true
		}
	}
	return Window{}, false
}

func TestLimiterRequests(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l := NewLimiter(clk.now)
	k := &Key{Name: "bob", RPM: 30}
	for i := range 30 {
		ws, err := l.Admit(k, 100)
		if err != nil {
			t.Fatalf("submission %d: %v", i, err)
		}
		if w, _ := window(ws, LimitRequests); w.Remaining != 29-i || w.Max != 30 {
			t.Fatalf("submission %d: window %+v", i, w)
		}
	}
	ws, err := l.Admit(k, 100)
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != LimitRequests || le.RetryAfter != 2*time.Second {
		t.Fatalf("31st submission: %v (%+v)", err, le)
	}
	if w, _ := window(ws, LimitRequests); w.Remaining != 0 || w.Reset != time.Minute {
		t.Fatalf("window after refusal %+v", w)
	}
	if _, ok := window(ws, LimitTokens); ok {
		t.Fatal("a key without tpm reports a tokens window")
	}
	clk.add(2 * time.Second)
	if _, err := l.Admit(k, 100); err != nil {
		t.Fatalf("after the refill: %v", err)
	}
	if _, err := l.Admit(k, 100); err == nil {
		t.Fatal("one refill admitted two")
	}
}

// TestLimiterUnadmit: a request given back is one more to take, never more than the limit;
// a key without a requests limit has nothing to give back.
func TestLimiterUnadmit(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l := NewLimiter(clk.now)
	k := &Key{Name: "bob", RPM: 2}
	for range 2 {
		if _, err := l.Admit(k, 1); err != nil {
			t.Fatal(err)
		}
	}
	l.Unadmit("bob")
	if _, err := l.Admit(k, 1); err != nil {
		t.Fatalf("after a request was given back: %v", err)
	}
	if _, err := l.Admit(k, 1); err == nil {
		t.Fatal("one request given back admitted two")
	}
	for range 5 {
		l.Unadmit("bob")
	}
	if w, _ := window(l.Windows(k), LimitRequests); w.Remaining != 2 {
		t.Fatalf("after more given back than taken: %d requests remaining, want the limit 2", w.Remaining)
	}
	l.Unadmit("carol") // no bucket: nothing happens
	if len(l.rpm) != 1 {
		t.Fatalf("Unadmit made a bucket: %d", len(l.rpm))
	}
}

func TestLimiterTokens(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l := NewLimiter(clk.now)
	k := &Key{Name: "alice", RPM: 100, TPM: 600}
	if _, err := l.Admit(k, 500); err != nil {
		t.Fatal(err)
	}
	// 100 left: 200 must wait for 100 more at 10/s.
	_, err := l.Admit(k, 200)
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != LimitTokens || le.RetryAfter != 10*time.Second {
		t.Fatalf("over tpm: %v", err)
	}
	// The refused submission took no request either.
	if w, _ := window(l.Windows(k), LimitRequests); w.Remaining != 99 {
		t.Fatalf("a refused submission took a request: %+v", w)
	}
	// The first task used 100 of its 500: 400 come back.
	l.Settle(k.Name, 500, 100)
	if w, _ := window(l.Windows(k), LimitTokens); w.Remaining != 500 || w.Reset != 10*time.Second {
		t.Fatalf("after settle: %+v", w)
	}
	if _, err := l.Admit(k, 200); err != nil {
		t.Fatalf("after settle: %v", err)
	}
	// More than the whole minute's tokens can never be admitted.
	_, err = l.Admit(k, 601)
	if !errors.As(err, &le) || le.RetryAfter != 0 || !strings.Contains(le.Error(), "exceed") {
		t.Fatalf("over the limit itself: %v", err)
	}
	// Using more than reserved is a debt the refill pays.
	l.Settle(k.Name, 10, 400)
	if w, _ := window(l.Windows(k), LimitTokens); w.Remaining != 0 {
		t.Fatalf("after overuse: %+v", w)
	}
	// -90 now: a minute's refill leaves it 90 short of full, 9 s more fills it.
	clk.add(time.Minute)
	if w, _ := window(l.Windows(k), LimitTokens); w.Remaining != 510 || w.Reset != 9*time.Second {
		t.Fatalf("a minute later: %+v", w)
	}
	clk.add(9 * time.Second)
	if w, _ := window(l.Windows(k), LimitTokens); w.Remaining != 600 || w.Reset != 0 {
		t.Fatalf("once refilled: %+v", w)
	}
}

func TestLimiterReloadShrinks(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l := NewLimiter(clk.now)
	if _, err := l.Admit(&Key{Name: "a", RPM: 60}, 0); err != nil {
		t.Fatal(err)
	}
	w, _ := window(l.Windows(&Key{Name: "a", RPM: 10}), LimitRequests)
	if w.Max != 10 || w.Remaining != 10 {
		t.Fatalf("after a reload to rpm 10: %+v", w)
	}
}
