// Package sdk is the Go client of orchestratord: a small hand-written layer over the generated
// client in gen/client that submits tasks, streams their events as a Go iterator and wraps the
// other operations (cancel, task state, sessions, artifacts, capabilities, pools).
//
// # Streaming
//
// [Client.Stream] returns an iter.Seq2[Event, error]. Each event is one of the typed payloads
// [*Started], [*Token], [*Metrics], [*End] or [*ErrorEvent] (their fields are the contract's
// x-sse-events schemas of streamTask). The stream ends after the End or ErrorEvent event.
//
//	for ev, err := range c.Stream(ctx, adm.TaskId) {
//		if err != nil {
//			return err
//		}
//		if tok, ok := ev.(*sdk.Token); ok {
//			fmt.Print(tok.Text)
//		}
//	}
//
// When the connection drops before the last event, the iterator reconnects with Last-Event-ID
// set to the last event it delivered, so every event is delivered exactly once; so does a
// connection silent (not even a heartbeat) for [Options.StreamIdleTimeout]. The daemon
// cancels a task whose stream client disconnects unless it runs with
// stream.cancel_on_disconnect: false; with the default, a resumed stream still delivers every
// event, but the task was canceled at the drop, so it ends with End{Canceled: true}.
//
// Stopping the iteration early (break) cancels the task; [Options.KeepTaskOnBreak] or the
// [KeepTask] stream option keep it running.
//
// The generated client's StreamTaskWithResponse reads the whole event stream into memory
// before it returns (it buffers the body until the task has ended), and StreamTask hands back
// the raw *http.Response for the caller to parse: use [Client.Stream] instead.
//
// # Errors and backpressure
//
// Every non-2xx answer is returned as an [*APIError] carrying the daemon's error envelope. A 429
// whose envelope says retriable (or that has no envelope, as a proxy's) is retried after its
// Retry-After (capped by [Options.MaxRetryWait]) up to [Options.MaxRetries] times; re-posting a
// task is idempotent because its task_id is the same. A 429 marked retriable: false (a spent
// token budget, BUDGET_EXCEEDED) is returned at once.
package sdk
