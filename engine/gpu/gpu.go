package gpu

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Inventory is what a Snapshot saw.
type Inventory struct {
	// Available is true when NVML answered; Devices is then the list of GPUs (possibly
	// empty).
	Available bool
	// Reason says why the inventory is unavailable (empty when Available).
	Reason string
	// Driver is the NVIDIA driver version, when NVML reports it.
	Driver  string
	Devices []Device
}

// Device is one GPU. Fields NVML could not report are zero.
type Device struct {
	Index          int
	UUID           string
	Name           string
	MemoryTotal    uint64 // bytes
	MemoryUsed     uint64 // bytes
	UtilizationPct uint32 // GPU busy percentage over NVML's last sample period
}

// Probe reads GPU inventories from NVML. Create it with New; it is safe for concurrent use.
type Probe struct {
	lib nvml.Interface
	log *slog.Logger

	mu       sync.Mutex
	initDone bool  // Init was called
	initErr  error // Init's failure (nil: NVML is initialised), valid when initDone
	closed   bool
}

// New returns a Probe over lib (nvml.New() in production). A nil logger discards logs.
func New(lib nvml.Interface, logger *slog.Logger) *Probe {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Probe{lib: lib, log: logger}
}

// Snapshot returns the current inventory. It initialises NVML on first use.
func (p *Probe) Snapshot(ctx context.Context) Inventory {
	p.mu.Lock()
	defer p.mu.Unlock()

	if p.closed {
		return Inventory{Reason: "probe closed"}
	}
	if !p.initDone {
		p.initDone = true
		_, p.initErr = guard(func() (struct{}, nvml.Return) { return struct{}{}, p.lib.Init() })
		if p.initErr != nil {
			p.log.InfoContext(ctx, "NVML not available; GPU inventory disabled", "err", p.initErr)
		}
	}
	if p.initErr != nil {
		return Inventory{Reason: "NVML not available: " + p.initErr.Error()}
	}
	if err := ctx.Err(); err != nil {
		return Inventory{Reason: "snapshot cancelled: " + err.Error()}
	}

	inv := Inventory{Available: true}
	if v, err := guard(p.lib.SystemGetDriverVersion); err != nil {
		p.log.DebugContext(ctx, "NVML driver version unavailable", "err", err)
	} else {
		inv.Driver = v
	}
	count, err := guard(p.lib.DeviceGetCount)
	if err != nil {
		return Inventory{Reason: "NVML device count failed: " + err.Error(), Driver: inv.Driver}
	}
	inv.Devices = make([]Device, 0, count)
	for i := range count {
		if err := ctx.Err(); err != nil {
			return Inventory{Reason: "snapshot cancelled: " + err.Error(), Driver: inv.Driver}
		}
		h, err := guard(func() (nvml.Device, nvml.Return) { return p.lib.DeviceGetHandleByIndex(i) })
		if err != nil {
			p.log.WarnContext(ctx, "NVML device handle unavailable; device skipped", "index", i, "err", err)
			continue
		}
		inv.Devices = append(inv.Devices, p.device(ctx, i, h))
	}
	return inv
}

func (p *Probe) device(ctx context.Context, i int, h nvml.Device) Device {
	d := Device{Index: i}
	field := func(name string, err error) {
		if err != nil {
			p.log.DebugContext(ctx, "NVML device field unavailable", "index", i, "field", name, "err", err)
		}
	}
	var err error
	if d.UUID, err = guard(h.GetUUID); err != nil {
		field("uuid", err)
	}
	if d.Name, err = guard(h.GetName); err != nil {
		field("name", err)
	}
	if mem, err := guard(h.GetMemoryInfo); err != nil {
		field("memory", err)
	} else {
		d.MemoryTotal, d.MemoryUsed = mem.Total, mem.Used
	}
	if u, err := guard(h.GetUtilizationRates); err != nil {
		field("utilization", err)
	} else {
		d.UtilizationPct = u.Gpu
	}
	return d
}

// Close shuts NVML down if this Probe initialised it. It is idempotent.
func (p *Probe) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if !p.initDone || p.initErr != nil {
		return nil
	}
	if _, err := guard(func() (struct{}, nvml.Return) { return struct{}{}, p.lib.Shutdown() }); err != nil {
		return fmt.Errorf("gpu: NVML shutdown: %w", err)
	}
	return nil
}

// guard calls f, turning a non-SUCCESS return and a panic (an unimplemented mock method)
// into an error.
func guard[T any](f func() (T, nvml.Return)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero T
			v, err = zero, fmt.Errorf("NVML call panicked: %v", r)
		}
	}()
	v, ret := f()
	if ret != nvml.SUCCESS {
		var zero T
		return zero, ret
	}
	return v, nil
}
