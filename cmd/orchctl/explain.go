package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/sdk"
)

// printTask writes a task's state for people: one line of state, then why it waits where it
// does (admission) and where it runs and why (placement, with every candidate replica).
func printTask(w io.Writer, st *client.TaskState) error {
	var b strings.Builder
	fmt.Fprintf(&b, "task %s: %s on pool %s, %s, %d tokens out", st.TaskId, st.State, st.PoolId, st.Priority, st.TokensOut)
	if st.Migrations != nil && *st.Migrations > 0 {
		fmt.Fprintf(&b, ", %d migrations", *st.Migrations)
	}
	b.WriteString("\n")
	if st.QueuePosition != nil {
		fmt.Fprintf(&b, "queued at position %d", *st.QueuePosition)
		if st.PredictedStartMs != nil {
			fmt.Fprintf(&b, ", predicted start in %s", time.Duration(*st.PredictedStartMs)*time.Millisecond)
		}
		b.WriteString("\n")
	}
	if a := st.Admission; a != nil {
		parts := []string{"key " + a.KeyName, "class " + string(a.Class)}
		if a.Position != nil {
			parts = append(parts, "position "+strconv.Itoa(int(*a.Position)))
		}
		if a.VirtualStart != nil {
			parts = append(parts, "virtual start "+strconv.FormatFloat(*a.VirtualStart, 'f', -1, 64))
		}
		if ab := a.AheadByClass; ab != nil {
			parts = append(parts, fmt.Sprintf("ahead: %d interactive, %d batch", ab.Interactive, ab.Batch))
		}
		if a.ReasonIfRefused != nil {
			parts = append(parts, "refused: "+string(*a.ReasonIfRefused))
		}
		fmt.Fprintf(&b, "admission: %s\n", strings.Join(parts, ", "))
	}
	if p := st.Placement; p != nil {
		if p.ReplicaId != "" {
			fmt.Fprintf(&b, "placement: replica %s of pool %s (%s)\n", p.ReplicaId, p.PoolId, p.Reason)
		} else {
			fmt.Fprintf(&b, "placement: no replica of pool %s could take it\n", p.PoolId)
		}
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, c := range p.Candidates {
			switch {
			case c.ExcludedBecause != nil && *c.ExcludedBecause != "":
				fmt.Fprintf(tw, "  %s\texcluded: %s\n", c.ReplicaId, *c.ExcludedBecause)
			case c.ReplicaId == p.ReplicaId:
				fmt.Fprintf(tw, "  %s\tscore %.3f, chosen\n", c.ReplicaId, c.Score)
			default:
				fmt.Fprintf(tw, "  %s\tscore %.3f\n", c.ReplicaId, c.Score)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if e := st.Error; e != nil {
		fmt.Fprintf(&b, "error: %s %s", e.Code, e.Message)
		if e.Retriable {
			b.WriteString(" (retriable)")
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// errorLine is how orchctl reports an error. A refusal by a limit (429) says which limit or
// policy refused it and when to retry, from its error envelope and Retry-After.
func errorLine(err error) string {
	var apiErr *sdk.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 {
		return err.Error()
	}
	env := apiErr.Envelope
	parts := []string{fmt.Sprintf("HTTP 429 %s", env.Code)}
	if env.Limit != nil {
		parts = append(parts, "limit "+string(*env.Limit))
	}
	if env.PolicyLabel != nil && *env.PolicyLabel != "" {
		parts = append(parts, "policy "+*env.PolicyLabel)
	}
	switch {
	case apiErr.RetryAfter > 0:
		parts = append(parts, "retry after "+apiErr.RetryAfter.String())
	case env.RetryAfterMs != nil:
		parts = append(parts, "retry after "+(time.Duration(*env.RetryAfterMs)*time.Millisecond).String())
	}
	return fmt.Sprintf("refused: %s (%s)", env.Message, strings.Join(parts, "; "))
}
