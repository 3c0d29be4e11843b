// Package gpu reports the host's NVIDIA GPUs through NVML (github.com/NVIDIA/go-nvml).
//
// # Design
//
// A Probe wraps an nvml.Interface: production code passes nvml.New(), tests pass a mock
// (github.com/NVIDIA/go-nvml/pkg/nvml/mock and its dgxh200 server). The first Snapshot calls
// Init; the outcome is remembered, so a host without NVML (libnvidia-ml.so missing, which
// Init reports as ERROR_LIBRARY_NOT_FOUND) pays for one failed load and then every Snapshot
// answers at once with Available=false and Reason "NVML not available: <return code>". A
// Snapshot never fails and never panics: it always describes what it could see.
//
// Each device field is read on its own. A field whose query fails is left at its zero value
// and the failure is logged at debug level; a device whose handle cannot be obtained is left
// out and logged at warn level. Mock implementations panic on methods they do not implement
// (the dgxh200 mock has no utilisation, for instance); those panics are recovered per field
// and treated as a failed query. A failure to read the device count makes the whole
// inventory unavailable.
//
// Close shuts NVML down when Init succeeded; a Snapshot after Close reports
// Available=false with Reason "probe closed".
//
// go-nvml loads libnvidia-ml.so with dlopen and needs cgo.
//
// # Concurrency
//
// One mutex in Probe guards the init state and serialises Snapshot and Close, so NVML calls
// from one Probe never overlap. No goroutines are started.
//
// # Bounds
//
// A Snapshot makes a fixed number of NVML calls per device and allocates one Device per GPU.
// NVML calls are not cancellable: ctx is checked between devices only.
package gpu
