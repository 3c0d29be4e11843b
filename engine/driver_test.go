package engine

import (
	"strings"
	"testing"
)

func TestNewRegistry(t *testing.T) {
	newR := func(ReplicaOptions) Replica { return nil }
	ok := Driver{Name: "a", Workloads: []string{"completion"}, New: newR}
	tests := []struct {
		name    string
		drivers []Driver
		wantErr string
	}{
		{"ok", []Driver{ok, {Name: "b", Workloads: []string{"chat"}, New: newR, Managed: &ManagedTemplate{Argv: []string{"x", "--port={port}"}}}}, ""},
		{"no name", []Driver{{Workloads: []string{"completion"}, New: newR}}, "without a name"},
		{"twice", []Driver{ok, ok}, "twice"},
		{"no New", []Driver{{Name: "a", Workloads: []string{"completion"}}}, "no New"},
		{"no workload", []Driver{{Name: "a", New: newR}}, "no workload"},
		{"managed without port", []Driver{{Name: "a", Workloads: []string{"completion"}, New: newR, Managed: &ManagedTemplate{Argv: []string{"x"}}}}, "{port}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRegistry(tt.drivers...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(r.Names(), ",") != "a,b" || len(r.All()) != 2 {
				t.Errorf("names = %v", r.Names())
			}
			if _, found := r.Lookup("b"); !found {
				t.Error("b not found")
			}
			if _, found := r.Lookup("c"); found {
				t.Error("c found")
			}
		})
	}
}

func TestKindsFault(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Kinds() {
		if seen[k.String()] {
			t.Errorf("label %q used twice", k.String())
		}
		seen[k.String()] = true
		if strings.ToUpper(k.String()) == k.String() {
			t.Errorf("kind %d label %q looks like an API code", int(k), k)
		}
	}
	want := map[Kind]Fault{KindInvalidRequest: FaultRequest, KindOverload: FaultOverload, KindInternal: FaultDaemon,
		KindPoolUnavailable: FaultReplica, KindWorkerReset: FaultReplica, KindDecodeTimeout: FaultReplica,
		KindEngineFailure: FaultReplica, KindProtocol: FaultReplica}
	if len(want) != len(Kinds()) {
		t.Fatalf("table covers %d of %d kinds", len(want), len(Kinds()))
	}
	for k, f := range want {
		if k.Fault() != f {
			t.Errorf("%v.Fault() = %v, want %v", k, k.Fault(), f)
		}
	}
}

func TestSumMetrics(t *testing.T) {
	text := `# HELP a help with a } brace
# TYPE a gauge
a{x="1"} 2
a{x="}",y="\"q\""} 3.5
a 1e1
b 7 1700000000000
bb 100
c NaN
c{z="1"} +Inf
d{broken 4
`
	got, err := SumMetrics(strings.NewReader(text), "a", "b", "c", "d", "e")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["a"] != 15.5 || got["b"] != 7 {
		t.Errorf("got %v", got)
	}
	m, err := ReadMetrics(strings.NewReader(text), "a", "b", "c", "d", "e")
	if err != nil {
		t.Fatal(err)
	}
	if m["a"] != (Samples{Sum: 15.5, N: 3}) || m["b"] != (Samples{Sum: 7, N: 1}) {
		t.Errorf("samples %v", m)
	}
	l := LoadFromMetrics(m, "a", "e", "b")
	if l != (Load{Running: 15, Waiting: -1, KVUsage: 7}) {
		t.Errorf("load %+v", l)
	}
	// A ratio reported once per label set (vLLM's KV usage per data-parallel engine) is their
	// mean; requests are their sum.
	if l := LoadFromMetrics(m, "b", "e", "a"); l.KVUsage != 15.5/3 || l.Running != 7 {
		t.Errorf("load %+v, want KVUsage the mean of a's samples", l)
	}
}

func FuzzSumMetrics(f *testing.F) {
	f.Add("a{x=\"1\"} 2\nb 3\n")
	f.Fuzz(func(t *testing.T, text string) {
		_, _ = SumMetrics(strings.NewReader(text), "a", "b")
	})
}
