package main

import (
	"encoding/json"
	"fmt"
	"time"
)

// dur is a time.Duration that reads and writes as "1.5s" in JSON.
type dur time.Duration

func (d dur) D() time.Duration              { return time.Duration(d) }
func (d dur) String() string                { return time.Duration(d).String() }
func (d dur) MarshalJSON() ([]byte, error)  { return json.Marshal(time.Duration(d).String()) }
func (d *dur) UnmarshalJSON(b []byte) error { return unmarshalDur(b, d) }

func unmarshalDur(b []byte, d *dur) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = dur(v)
	return err
}

// plan is what one invocation measures. The short plan (make bench) keeps every scenario and
// contender of the full one with smaller counts and one round; the full plan (make bench-full)
// runs three interleaved rounds and adds orchestratord with info-level logging.
type plan struct {
	Name   string `json:"name"`
	Rounds int    `json:"rounds"`

	// Scenario 1: admission.
	AdmitConcurrency []int `json:"admit_concurrency"`
	AdmitRequests    int   `json:"admit_requests"` // bound per run
	AdmitDuration    dur   `json:"admit_duration"` // bound per run

	// Scenario 2: stream relay, RelayStreams[i] concurrent streams, RelayRequests[i] streams per run.
	RelayStreams    []int `json:"relay_streams"`
	RelayRequests   []int `json:"relay_requests"`
	RelayTokens     int   `json:"relay_tokens"`
	RelayTokenDelay dur   `json:"relay_token_delay"` // the simulator's pace
	RelayDuration   dur   `json:"relay_duration"`    // bound per run (plus RelayGrace)
	RelayGrace      dur   `json:"relay_grace"`

	// Scenario 3: idle streams.
	IdleStreams    []int `json:"idle_streams"`
	IdleTokenDelay dur   `json:"idle_token_delay"`
	IdleSettle     dur   `json:"idle_settle"` // wait after the last stream opened, before sampling

	// Scenario 4: queue micro-benchmarks.
	QueueBenchtime string `json:"queue_benchtime"`
	QueueCount     int    `json:"queue_count"`

	// Scenario 5: aiperf (an independent OpenAI client) against direct and orchestratord's facade.
	AiperfRequests    int `json:"aiperf_requests"`
	AiperfConcurrency int `json:"aiperf_concurrency"`
	AiperfTokens      int `json:"aiperf_tokens"`  // output tokens asked per request
	AiperfTimeout     dur `json:"aiperf_timeout"` // bound per run (aiperf starts several processes: ~15 s)

	// InfoLogging adds the contender "orchestratord-info" (log_level info) to scenarios 1 and 2.
	InfoLogging bool `json:"info_logging"`
}

func planFor(name string) (plan, error) {
	switch name {
	case "short":
		return plan{
			Name: "short", Rounds: 1,
			AdmitConcurrency: []int{1, 16, 64}, AdmitRequests: 20000, AdmitDuration: dur(3 * time.Second),
			RelayStreams: []int{1, 100, 1000}, RelayRequests: []int{3, 200, 1000}, RelayTokens: 256,
			RelayTokenDelay: dur(5 * time.Millisecond), RelayDuration: dur(12 * time.Second), RelayGrace: dur(3 * time.Second),
			IdleStreams: []int{1000, 5000}, IdleTokenDelay: dur(5 * time.Second), IdleSettle: dur(2 * time.Second),
			QueueBenchtime: "100ms", QueueCount: 1,
			AiperfRequests: 64, AiperfConcurrency: 8, AiperfTokens: 64, AiperfTimeout: dur(3 * time.Minute),
		}, nil
	case "full":
		return plan{
			Name: "full", Rounds: 3,
			AdmitConcurrency: []int{1, 16, 64}, AdmitRequests: 200000, AdmitDuration: dur(8 * time.Second),
			RelayStreams: []int{1, 100, 1000}, RelayRequests: []int{8, 500, 2000}, RelayTokens: 256,
			RelayTokenDelay: dur(5 * time.Millisecond), RelayDuration: dur(30 * time.Second), RelayGrace: dur(10 * time.Second),
			IdleStreams: []int{1000, 5000}, IdleTokenDelay: dur(5 * time.Second), IdleSettle: dur(3 * time.Second),
			QueueBenchtime: "1s", QueueCount: 3,
			AiperfRequests: 1000, AiperfConcurrency: 32, AiperfTokens: 128, AiperfTimeout: dur(5 * time.Minute),
			InfoLogging: true,
		}, nil
	}
	return plan{}, fmt.Errorf("unknown plan %q (want short or full)", name)
}
