package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/sdk"
)

// streamFlags are the output flags of run and tasks watch.
type streamFlags struct {
	json    bool
	verbose bool
}

func (f *streamFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.json, "json", false, "print every event as a JSON line ({\"task_id\",\"id\",\"event\",\"data\"}) instead of the text")
	cmd.Flags().BoolVar(&f.verbose, "verbose", false, "ask for human-readable narration in metrics events (with --json)")
}

func newRunCmd(g *globals, io stdio) *cobra.Command {
	var (
		sf        streamFlags
		model     string
		maxTokens int32
		priority  string
		deadline  time.Duration
		session   string
		seed      int64
	)
	cmd := &cobra.Command{
		Use:   "run PROMPT|-",
		Short: "Submit a completion and stream its text",
		Long: `Submit a completion task and stream its text to stdout. PROMPT is the prompt, or - to read it
from stdin. The model defaults to the first pool's model (from /v1/capabilities).

On a terminal, a live status line on stderr shows a spinner, the queue position, the ETA, the
tokens so far and tokens/s until the text starts, and a summary follows the text. When stdout
is not a terminal (piped) only the text is written to it. --json writes the events instead.
Interrupting (Ctrl-C) cancels the task.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRunFlags(maxTokens, priority, deadline); err != nil {
				return err
			}
			prompt := args[0]
			if prompt == "-" {
				b, err := readAllCtx(cmd.Context(), io.in)
				if err != nil {
					return err
				}
				prompt = strings.TrimSuffix(string(b), "\n")
			}
			if prompt == "" {
				return usageError{errors.New("empty prompt")}
			}
			sid := uuid.New()
			if session != "" {
				var err error
				if sid, err = parseID("session id", session); err != nil {
					return err
				}
			}
			return withClient(g, func(c *sdk.Client) error {
				ctx := cmd.Context()
				req, err := completion(ctx, c, model, prompt, int(maxTokens))
				if err != nil {
					return err
				}
				req.TaskId, req.SessionId = uuid.New(), sid
				req.MaxTokens = maxTokens
				req.Priority = client.Priority(priority)
				req.DeadlineMs = deadline.Milliseconds()
				if cmd.Flags().Changed("seed") {
					req.Seed = &seed
				}
				adm, err := c.Submit(ctx, req)
				if err != nil {
					cancelInterrupted(ctx, c, req.TaskId)
					return err
				}
				return streamTask(ctx, c, io, adm.TaskId, maxTokens, sf)
			})
		},
	}
	sf.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&model, "model", "m", "", "model (a pool's model_id or model_ref; default: the first pool's)")
	f.Int32VarP(&maxTokens, "max-tokens", "n", 64, "most tokens to generate")
	f.StringVar(&priority, "priority", string(client.Interactive), "interactive or batch")
	f.DurationVar(&deadline, "deadline", time.Minute, "time budget from admission (1ms to 24h)")
	f.StringVar(&session, "session", "", "session id (UUID; default: a new session)")
	f.Int64Var(&seed, "seed", 0, "sampling seed")
	return cmd
}

// Bounds of the contract's deadline_ms: a task's (TaskRequest) and a drain's (DrainRequest).
const (
	maxTaskDeadline  = 24 * time.Hour
	maxDrainDeadline = time.Hour
)

// checkRunFlags refuses flag values the daemon would refuse, before any request: a typo is a
// bad command line (exit 2), not a refusal (3) or, with the daemon down, a network error (1).
func checkRunFlags(maxTokens int32, priority string, deadline time.Duration) error {
	if maxTokens < 1 {
		return usageError{errors.New("--max-tokens must be at least 1")}
	}
	if !client.Priority(priority).Valid() {
		return usageError{fmt.Errorf("--priority %q: must be %s or %s", priority, client.Interactive, client.Batch)}
	}
	return checkDeadline(deadline, maxTaskDeadline)
}

// checkDeadline refuses a --deadline outside the contract's 1 ms to limit (the daemon counts
// whole milliseconds, so 500µs is 0 ms).
func checkDeadline(d, limit time.Duration) error {
	if ms := d.Milliseconds(); ms < 1 || ms > limit.Milliseconds() {
		return usageError{fmt.Errorf("--deadline %s: must be between 1ms and %s", d, limit)}
	}
	return nil
}

// interruptedCancelTimeout bounds the cancel of a task whose submit was interrupted.
const interruptedCancelTimeout = 5 * time.Second

// cancelInterrupted cancels the task whose submit failed because ctx ended (Ctrl-C): the
// daemon may have admitted it already, and with no stream open its disconnect policy never
// applies, so it would run unread and spend the key's slot and budget. orchctl chose the task
// id, so it can cancel it without the answer.
func cancelInterrupted(ctx context.Context, c *sdk.Client, id uuid.UUID) {
	if ctx.Err() == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), interruptedCancelTimeout)
	defer cancel()
	_ = c.Cancel(cctx, id)
}

// completion builds the task for model (default: the first pool's), with the engine and a
// context length the matching pool accepts: sdk.Completion's, or more when the prompt and
// maxTokens need more (the prompt's bytes bound its tokens), up to the pool's ctx_max.
func completion(ctx context.Context, c *sdk.Client, model, prompt string, maxTokens int) (client.TaskRequest, error) {
	caps, err := c.Capabilities(ctx)
	if err != nil {
		return client.TaskRequest{}, err
	}
	if len(caps.Pools) == 0 {
		return client.TaskRequest{}, errors.New("the daemon has no pools")
	}
	p := caps.Pools[0]
	if model != "" {
		found := false
		for _, q := range caps.Pools {
			if q.ModelId == model || q.ModelRef == model {
				p, found = q, true
				break
			}
		}
		if !found {
			// Let the daemon answer (it names what it serves).
			req := sdk.Completion(model, prompt)
			return req, nil
		}
	}
	req := sdk.Completion(firstOf(model, p.ModelId), prompt)
	req.Engine = p.Engine
	req.Ctx = min(max(req.Ctx, int32(min(maxTokens+len(prompt), math.MaxInt32))), p.CtxMax)
	return req, nil
}

// queuePoll is how often the status line asks for the queue position of a queued task.
const queuePoll = 500 * time.Millisecond

// pollQueue keeps the status line's queue position and ETA current while the task is queued.
func pollQueue(ctx context.Context, c *sdk.Client, id uuid.UUID, st *status) {
	t := time.NewTicker(queuePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ts, err := c.Task(ctx, id)
		if err != nil || ts.State != client.Queued {
			return
		}
		if ts.QueuePosition != nil {
			var predicted int64
			if ts.PredictedStartMs != nil {
				predicted = *ts.PredictedStartMs
			}
			st.queued(*ts.QueuePosition, predicted)
		}
	}
}

// jsonEvent is one line of --json output. task_id names the task for tasks get/cancel (the
// events carry none, and the terminal summary that prints it is not written with --json).
type jsonEvent struct {
	TaskID string    `json:"task_id"`
	ID     int64     `json:"id"`
	Event  string    `json:"event"`
	Data   sdk.Event `json:"data"`
}

// errCanceled is a stream that ended with end{canceled: true}.
var errCanceled = errors.New("the task was canceled")

// streamTask writes the task's stream: its text (with a live status line when stderr is a
// terminal) or, with --json, its events.
func streamTask(ctx context.Context, c *sdk.Client, io stdio, id uuid.UUID, maxTokens int32, f streamFlags, opts ...sdk.StreamOption) error {
	if f.verbose {
		opts = append(opts, sdk.Verbose())
	}
	var st *status
	outTTY := isTerminal(io.out)
	if !f.json && isTerminal(io.err) {
		st = startStatus(io.err, maxTokens, time.Now)
		defer st.close()
		// Registered after st.close, so it runs first: the poller is gone before the status.
		pollCtx, stopPoll := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); pollQueue(pollCtx, c, id, st) }()
		defer func() { stopPoll(); wg.Wait() }()
	}
	enc := json.NewEncoder(io.out)
	taskID := id.String()
	var text strings.Builder
	for ev, err := range c.Stream(ctx, id, opts...) {
		if err != nil {
			return err
		}
		if f.json {
			if err := enc.Encode(jsonEvent{TaskID: taskID, ID: ev.EventID(), Event: ev.EventName(), Data: ev}); err != nil {
				return err
			}
		}
		switch ev := ev.(type) {
		case *sdk.Started:
			st.started(ev)
		case *sdk.Token:
			if st != nil {
				st.token(outTTY)
			}
			if !f.json {
				text.WriteString(ev.Text)
				if _, err := fmt.Fprint(io.out, ev.Text); err != nil {
					return err
				}
			}
		case *sdk.End:
			if !f.json && text.Len() > 0 && !strings.HasSuffix(text.String(), "\n") {
				fmt.Fprintln(io.out)
			}
			if st != nil {
				st.finish(id, ev)
			}
			if ev.Canceled {
				return errCanceled
			}
		case *sdk.ErrorEvent:
			if !f.json && text.Len() > 0 && !strings.HasSuffix(text.String(), "\n") {
				fmt.Fprintln(io.out)
			}
			return ev
		}
	}
	return nil
}
