package gpu

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// noLibrary is an NVML whose Init fails as on a host without libnvidia-ml.so. Every other
// method is unset and would panic if called.
func noLibrary(inits *int) *mock.Interface {
	return &mock.Interface{
		InitFunc: func() nvml.Return {
			*inits++
			return nvml.ERROR_LIBRARY_NOT_FOUND
		},
	}
}

func TestNoLibrary(t *testing.T) {
	inits := 0
	p := New(noLibrary(&inits), testLogger(t))
	for range 3 {
		inv := p.Snapshot(context.Background())
		want := "NVML not available: ERROR_LIBRARY_NOT_FOUND"
		if inv.Available || inv.Reason != want || len(inv.Devices) != 0 {
			t.Fatalf("Snapshot = %+v, want unavailable with reason %q", inv, want)
		}
	}
	if inits != 1 {
		t.Fatalf("Init called %d times, want 1", inits)
	}
	if err := p.Close(); err != nil { // must not call Shutdown (unset: would panic)
		t.Fatal(err)
	}
}

func TestDGXH200(t *testing.T) {
	srv := dgxh200.New()
	var shutdowns int
	srv.ShutdownFunc = func() nvml.Return { shutdowns++; return nvml.SUCCESS }
	p := New(srv, testLogger(t))

	inv := p.Snapshot(context.Background())
	if !inv.Available || inv.Reason != "" {
		t.Fatalf("Snapshot unavailable: %q", inv.Reason)
	}
	if inv.Driver != "550.54.15" {
		t.Errorf("Driver = %q", inv.Driver)
	}
	if len(inv.Devices) != 8 {
		t.Fatalf("%d devices, want 8", len(inv.Devices))
	}
	uuids := map[string]bool{}
	for i, d := range inv.Devices {
		t.Run(fmt.Sprintf("gpu%d", i), func(t *testing.T) {
			if d.Index != i {
				t.Errorf("Index = %d, want %d", d.Index, i)
			}
			if !strings.HasPrefix(d.UUID, "GPU-") || uuids[d.UUID] {
				t.Errorf("UUID %q not a fresh GPU uuid", d.UUID)
			}
			uuids[d.UUID] = true
			if d.Name != "NVIDIA H200 141GB HBM3e" {
				t.Errorf("Name = %q", d.Name)
			}
			if d.MemoryTotal != 144384<<20 || d.MemoryUsed != 0 {
				t.Errorf("memory = %d/%d", d.MemoryUsed, d.MemoryTotal)
			}
			// The mock does not implement utilisation: the field stays zero.
			if d.UtilizationPct != 0 {
				t.Errorf("UtilizationPct = %d", d.UtilizationPct)
			}
		})
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if shutdowns != 1 {
		t.Fatalf("Shutdown called %d times, want 1", shutdowns)
	}
	if inv := p.Snapshot(context.Background()); inv.Available || inv.Reason != "probe closed" {
		t.Fatalf("Snapshot after Close = %+v", inv)
	}
}

func TestPerFieldDegradation(t *testing.T) {
	srv := dgxh200.New()
	d0 := srv.Devices[0].(*server.Device)
	d0.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{Gpu: 42, Memory: 7}, nvml.SUCCESS
	}
	d0.MemoryInfo = nvml.Memory{Total: 100, Used: 60, Free: 40}
	d1 := srv.Devices[1].(*server.Device)
	d1.GetNameFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
	d1.GetMemoryInfoFunc = nil // unset: the mock panics
	srv.SystemGetDriverVersionFunc = func() (string, nvml.Return) { return "", nvml.ERROR_NOT_SUPPORTED }
	inner := srv.DeviceGetHandleByIndexFunc
	srv.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if i == 2 {
			return nil, nvml.ERROR_GPU_IS_LOST
		}
		return inner(i)
	}

	p := New(srv, testLogger(t))
	inv := p.Snapshot(context.Background())
	if !inv.Available || inv.Driver != "" {
		t.Fatalf("Snapshot = %+v", inv)
	}
	if len(inv.Devices) != 7 {
		t.Fatalf("%d devices, want 7 (index 2 lost)", len(inv.Devices))
	}
	tests := []struct {
		name string
		got  Device
		want Device
	}{
		{"utilisation and memory", inv.Devices[0], Device{Index: 0, UUID: d0.UUID, Name: "NVIDIA H200 141GB HBM3e", MemoryTotal: 100, MemoryUsed: 60, UtilizationPct: 42}},
		{"name error, memory panic", inv.Devices[1], Device{Index: 1, UUID: d1.UUID}},
		{"index after lost device", inv.Devices[2], Device{Index: 3, UUID: srv.Devices[3].(*server.Device).UUID, Name: "NVIDIA H200 141GB HBM3e", MemoryTotal: 144384 << 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Fatalf("device = %+v, want %+v", tt.got, tt.want)
			}
		})
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name   string
		lib    func() nvml.Interface
		reason string
	}{
		{
			name: "init panics",
			lib: func() nvml.Interface {
				return &mock.Interface{InitFunc: func() nvml.Return { panic("boom") }}
			},
			reason: "NVML not available: NVML call panicked: boom",
		},
		{
			name: "driver not loaded",
			lib: func() nvml.Interface {
				return &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }}
			},
			reason: "NVML not available: ERROR_DRIVER_NOT_LOADED",
		},
		{
			name: "count fails",
			lib: func() nvml.Interface {
				srv := dgxh200.New()
				srv.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
				return srv
			},
			reason: "NVML device count failed: ERROR_UNKNOWN",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(tt.lib(), nil)
			inv := p.Snapshot(context.Background())
			if inv.Available || inv.Reason != tt.reason {
				t.Fatalf("Snapshot = %+v, want reason %q", inv, tt.reason)
			}
		})
	}
}

func TestCancelled(t *testing.T) {
	p := New(dgxh200.New(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	inv := p.Snapshot(ctx)
	if inv.Available || !strings.Contains(inv.Reason, "context canceled") {
		t.Fatalf("Snapshot = %+v", inv)
	}
}

func TestConcurrentSnapshots(t *testing.T) {
	srv := dgxh200.New()
	var inits int
	srv.InitFunc = func() nvml.Return { inits++; return nvml.SUCCESS }
	p := New(srv, nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if inv := p.Snapshot(context.Background()); len(inv.Devices) != 8 {
				t.Errorf("Snapshot = %+v", inv)
			}
		}()
	}
	wg.Wait()
	if inits != 1 {
		t.Fatalf("Init called %d times", inits)
	}
	_ = p.Close()
}

// TestSystemNVML runs against the host's NVML through nvml.New(): on a host without it the
// probe must report it unavailable without panicking; with it, it must list devices.
func TestSystemNVML(t *testing.T) {
	p := New(nvml.New(), testLogger(t))
	defer func() { _ = p.Close() }()
	inv := p.Snapshot(context.Background())
	t.Logf("inventory: %+v", inv)
	if !inv.Available && !strings.HasPrefix(inv.Reason, "NVML not available: ") {
		t.Fatalf("unavailable with unexpected reason %q", inv.Reason)
	}
	if inv.Available && inv.Reason != "" {
		t.Fatalf("available with reason %q", inv.Reason)
	}
}

// TestRealNVML asserts a real GPU is visible. Run it on a GPU host with
//
//	ORCHD_NVML_REAL=1 go test ./engine/gpu -run Real -v
func TestRealNVML(t *testing.T) {
	if os.Getenv("ORCHD_NVML_REAL") != "1" {
		t.Skip("set ORCHD_NVML_REAL=1 on a host with an NVIDIA GPU")
	}
	p := New(nvml.New(), testLogger(t))
	defer func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	}()
	inv := p.Snapshot(context.Background())
	t.Logf("available=%v reason=%q driver=%q", inv.Available, inv.Reason, inv.Driver)
	for _, d := range inv.Devices {
		t.Logf("gpu %d: %s %s memory %d/%d MiB utilisation %d%%",
			d.Index, d.UUID, d.Name, d.MemoryUsed>>20, d.MemoryTotal>>20, d.UtilizationPct)
	}
	if !inv.Available {
		t.Fatalf("NVML unavailable: %s", inv.Reason)
	}
	if len(inv.Devices) == 0 {
		t.Fatal("no devices")
	}
	for _, d := range inv.Devices {
		if d.UUID == "" || d.Name == "" || d.MemoryTotal == 0 {
			t.Errorf("device %d incomplete: %+v", d.Index, d)
		}
	}
}
