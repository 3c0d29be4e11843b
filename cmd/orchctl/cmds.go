package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/sdk"
)

// parseID parses a task or session id.
func parseID(what, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, usageError{fmt.Errorf("%s %q is not a UUID", what, s)}
	}
	return id, nil
}

// withClient runs f with a client built from the globals.
func withClient(g *globals, f func(c *sdk.Client) error) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

func newTasksCmd(g *globals, io stdio) *cobra.Command {
	cmd := &cobra.Command{Use: "tasks", Short: "Inspect, cancel and watch tasks"}
	var getJSON bool
	get := &cobra.Command{
		Use:   "get TASK_ID",
		Short: "Print a task's state, why it waits (admission) and where it runs (placement); --json for the JSON",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("task id", args[0])
			if err != nil {
				return err
			}
			return withClient(g, func(c *sdk.Client) error {
				st, err := c.Task(cmd.Context(), id)
				if err != nil {
					return err
				}
				if getJSON {
					return printJSON(io, st)
				}
				return printTask(io.out, st)
			})
		},
	}
	get.Flags().BoolVar(&getJSON, "json", false, "print the task's state as JSON")
	cancel := &cobra.Command{
		Use: "cancel TASK_ID", Short: "Cancel a task (idempotent)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("task id", args[0])
			if err != nil {
				return err
			}
			return withClient(g, func(c *sdk.Client) error { return c.Cancel(cmd.Context(), id) })
		},
	}
	var wo streamFlags
	watch := &cobra.Command{
		Use:   "watch TASK_ID",
		Short: "Stream a task's events (text, or --json); interrupting leaves the task to the daemon's disconnect policy",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("task id", args[0])
			if err != nil {
				return err
			}
			return withClient(g, func(c *sdk.Client) error {
				return streamTask(cmd.Context(), c, io, id, 0, wo, sdk.KeepTask())
			})
		},
	}
	wo.register(watch)
	cmd.AddCommand(get, cancel, watch)
	return cmd
}

func newSessionsCmd(g *globals, io stdio) *cobra.Command {
	cmd := &cobra.Command{Use: "sessions", Short: "Inspect and delete sessions"}
	get := &cobra.Command{
		Use: "get SESSION_ID", Short: "Print a session's metadata as JSON", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("session id", args[0])
			if err != nil {
				return err
			}
			return withClient(g, func(c *sdk.Client) error {
				s, err := c.Session(cmd.Context(), id)
				if err != nil {
					return err
				}
				return printJSON(io, s)
			})
		},
	}
	rm := &cobra.Command{
		Use: "rm SESSION_ID", Short: "Delete a session (idempotent)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("session id", args[0])
			if err != nil {
				return err
			}
			return withClient(g, func(c *sdk.Client) error { return c.DeleteSession(cmd.Context(), id) })
		},
	}
	cmd.AddCommand(get, rm)
	return cmd
}

func newArtifactsCmd(g *globals, io stdio) *cobra.Command {
	cmd := &cobra.Command{Use: "artifacts", Short: "Store and read content-addressed artifacts"}
	var kind string
	put := &cobra.Command{
		Use:   "put FILE|-",
		Short: "Store an artifact and print its id",
		Long: `Store an artifact and print its id. FILE (or - for stdin) holds the artifact as JSON
({"kind": ..., "content": {...}, "tags": [...]}); with --kind it holds only the content object.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := readInput(cmd.Context(), io, args[0])
			if err != nil {
				return err
			}
			var a client.Artifact
			if kind != "" {
				a.Kind = client.ArtifactKind(kind)
				err = decodeKeepingNumbers(b, &a.Content)
			} else {
				err = decodeKeepingNumbers(b, &a)
			}
			if err != nil {
				return usageError{fmt.Errorf("%s: not a JSON artifact: %w", args[0], err)}
			}
			return withClient(g, func(c *sdk.Client) error {
				ref, err := c.PutArtifact(cmd.Context(), a)
				if err != nil {
					return err
				}
				fmt.Fprintln(io.out, ref.Id)
				return nil
			})
		},
	}
	put.Flags().StringVar(&kind, "kind", "", "the artifact's kind; the input is then only its content")
	get := &cobra.Command{
		Use: "get ID", Short: "Print a stored artifact as JSON", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(g, func(c *sdk.Client) error {
				a, err := c.Artifact(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return printJSON(io, a)
			})
		},
	}
	cmd.AddCommand(put, get)
	return cmd
}

// decodeKeepingNumbers is json.Unmarshal keeping numbers as written (json.Number): an
// artifact's id is the hash of its canonical JSON, defined on the numbers as sent, and float64
// would round 9007199254740993 and turn 1.0 into 1 (another artifact, under another id).
func decodeKeepingNumbers(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// readInput reads the file name, or stdin for "-", until ctx ends.
func readInput(ctx context.Context, io stdio, name string) ([]byte, error) {
	if name == "-" {
		return readAllCtx(ctx, io.in)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllCtx(ctx, f)
}

// readAllCtx is readAllLimited returning as soon as ctx ends. main turns Ctrl-C into a canceled
// ctx, and a Read cannot be interrupted, so reading in place would swallow Ctrl-C until the
// input ends (a prompt still being typed, a slow producer). The reading goroutine stays
// blocked in Read until the input ends; orchctl exits right after, which ends it too.
func readAllCtx(ctx context.Context, r io.Reader) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1) // buffered: the goroutine never waits for a reader gone
	go func() {
		b, err := readAllLimited(r)
		done <- result{b, err}
	}()
	select {
	case res := <-done:
		return res.b, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// maxInput bounds what orchctl reads from a file or stdin.
const maxInput = 64 << 20

func readAllLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err == nil && len(b) > maxInput {
		return nil, fmt.Errorf("input larger than %d bytes", maxInput)
	}
	return b, err
}

func newPoolsCmd(g *globals, io stdio) *cobra.Command {
	cmd := &cobra.Command{Use: "pools", Short: "Pool health, drain and reload"}
	health := &cobra.Command{
		Use: "health POOL_ID", Short: "Print a pool's health as JSON", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(g, func(c *sdk.Client) error {
				h, err := c.PoolHealth(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return printJSON(io, h)
			})
		},
	}
	var deadline time.Duration
	var replica string
	drain := &cobra.Command{
		Use:   "drain POOL_ID [--replica REPLICA_ID]",
		Short: "Stop admission to a pool, or placement on one of its replicas; in-flight work may finish until --deadline",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkDeadline(deadline, maxDrainDeadline); err != nil {
				return err
			}
			return withClient(g, func(c *sdk.Client) error {
				var r *client.DrainResponse
				var err error
				if replica != "" {
					r, err = c.DrainReplica(cmd.Context(), args[0], replica, deadline)
				} else {
					r, err = c.DrainPool(cmd.Context(), args[0], deadline)
				}
				if err != nil {
					return err
				}
				return printJSON(io, r)
			})
		},
	}
	drain.Flags().DurationVar(&deadline, "deadline", 30*time.Second, "how long in-flight tasks may still run (1ms to 1h)")
	drain.Flags().StringVar(&replica, "replica", "", "drain only this replica (its id in pools health, e.g. default/0)")
	resume := &cobra.Command{
		Use: "resume POOL_ID REPLICA_ID", Short: "End a replica's drain: new tasks may be placed on it again", Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(g, func(c *sdk.Client) error {
				r, err := c.ResumeReplica(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				return printJSON(io, r)
			})
		},
	}
	reload := &cobra.Command{
		Use: "reload POOL_ID MODEL_REF", Short: "Switch a managed pool to another model (health-gated, with rollback)", Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withClient(g, func(c *sdk.Client) error {
				r, err := c.ReloadPool(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				return printJSON(io, r)
			})
		},
	}
	cmd.AddCommand(health, drain, resume, reload)
	return cmd
}

func newCapabilitiesCmd(g *globals, io stdio) *cobra.Command {
	return &cobra.Command{
		Use: "capabilities", Short: "Print the daemon's engines, pools and GPUs as JSON", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(g, func(c *sdk.Client) error {
				caps, err := c.Capabilities(cmd.Context())
				if err != nil {
					return err
				}
				return printJSON(io, caps)
			})
		},
	}
}
