package impl

// The OpenAI-compatible front door (the contract's `openai` tag): /v1/chat/completions,
// /v1/completions and /v1/models. A completion request is translated into a task.Spec and
// submitted through the same Tasks.Submit as POST /v1/tasks (admission, placement, limits,
// metrics); its answer is read from the task's event log, as GET /v1/tasks/{id}/stream reads it,
// and re-encoded as OpenAI objects or chunks. Errors on these routes are rendered OpenAI-shaped by
// HTTPErrorHandler (openAIRoute).

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/sse"
	"github.com/orchestratord/orchestratord/impl/task"
	"github.com/orchestratord/orchestratord/internal/textclip"
)

// HeaderTaskID names the header that carries a facade completion's task id.
const HeaderTaskID = "X-Task-Id"

// defaultCompletionMaxTokens is OpenAI's default max_tokens for /v1/completions.
const defaultCompletionMaxTokens = 16

// openAIRoutes are the echo routes whose errors are OpenAI-shaped, whatever the method: a
// request with the wrong one (405) is still an OpenAI client's, which reads body["error"].
var openAIRoutes = map[string]bool{
	"/v1/chat/completions": true,
	"/v1/completions":      true,
	"/v1/models":           true,
}

// openAIRoute reports whether the matched echo route is a facade operation's.
func openAIRoute(route string) bool { return openAIRoutes[route] }

// ListModels lists one entry per model id the pools serve.
func (s *Server) ListModels(ctx context.Context, _ api.ListModelsRequestObject) (api.ListModelsResponseObject, error) {
	var ids []string
	for _, v := range s.opts.Pools.Views() {
		if !slices.Contains(ids, v.ModelID) {
			ids = append(ids, v.ModelID)
		}
	}
	slices.Sort(ids)
	body := api.OpenAIModelList{Object: api.List, Data: make([]api.OpenAIModel, 0, len(ids))}
	for _, id := range ids {
		body.Data = append(body.Data, api.OpenAIModel{Id: id, Object: api.Model, Created: s.started.Unix(), OwnedBy: "orchestratord"})
	}
	return api.ListModels200JSONResponse{Body: body, Headers: api.ListModels200ResponseHeaders{XCorrelationId: CorrelationID(ctx)}}, nil
}

// completion is a facade request in domain terms.
type completion struct {
	chat         bool
	model        string
	prompt       string
	messages     []engine.Message // a chat's conversation (chat only)
	maxTokens    *int32           // nil: the default of the endpoint
	maxParam     string           // the request's field maxTokens came from ("" max_tokens)
	temperature  *float64
	seed         *int64
	stream       bool
	includeUsage bool
}

// CreateChatCompletion runs a chat completion as a task.
func (s *Server) CreateChatCompletion(ctx context.Context, req api.CreateChatCompletionRequestObject) (api.CreateChatCompletionResponseObject, error) {
	b := req.Body
	if b == nil {
		return nil, Errorf("INVALID_PARAMS", "body: a JSON chat completion request is required")
	}
	prompt, messages, err := chatPrompt(b.Messages)
	if err != nil {
		return nil, err
	}
	c := completion{chat: true, model: b.Model, prompt: prompt, messages: messages, maxTokens: b.MaxTokens, temperature: b.Temperature, seed: b.Seed}
	if b.MaxCompletionTokens != nil {
		c.maxTokens, c.maxParam = b.MaxCompletionTokens, "max_completion_tokens"
	}
	c.stream = b.Stream != nil && *b.Stream
	c.includeUsage = b.StreamOptions != nil && b.StreamOptions.IncludeUsage != nil && *b.StreamOptions.IncludeUsage
	return s.runCompletion(ctx, c)
}

// CreateCompletion runs a (legacy) text completion as a task.
func (s *Server) CreateCompletion(ctx context.Context, req api.CreateCompletionRequestObject) (api.CreateCompletionResponseObject, error) {
	b := req.Body
	if b == nil {
		return nil, Errorf("INVALID_PARAMS", "body: a JSON completion request is required")
	}
	// n, stop, echo, suffix, best_of and logprobs: the schema admits only what is supported.
	prompt, err := completionPrompt(b.Prompt)
	if err != nil {
		return nil, err
	}
	c := completion{model: b.Model, prompt: prompt, maxTokens: b.MaxTokens, temperature: b.Temperature, seed: b.Seed}
	if c.maxTokens == nil {
		n := int32(defaultCompletionMaxTokens)
		c.maxTokens = &n
	}
	c.stream = b.Stream != nil && *b.Stream
	c.includeUsage = b.StreamOptions != nil && b.StreamOptions.IncludeUsage != nil && *b.StreamOptions.IncludeUsage
	return s.runCompletion(ctx, c)
}

// invalidParam is a 400 INVALID_PARAMS about the request field param (OpenAI's error param).
func invalidParam(param, format string, args ...any) *Error {
	return &Error{Code: "INVALID_PARAMS", Param: param, Message: fmt.Sprintf(format, args...)}
}

// rawJSON decodes a union's JSON (the schema validated it already) into plain values.
func rawJSON(u interface{ MarshalJSON() ([]byte, error) }) (any, error) {
	b, err := u.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// messageText returns a message's content as text: a string, or the concatenation of an array
// of text parts.
func messageText(i int, content *api.OpenAIChatMessage_Content) (string, error) {
	if content == nil {
		return "", nil
	}
	v, err := rawJSON(content)
	if err != nil {
		return "", invalidParam(fmt.Sprintf("messages[%d].content", i), "/messages/%d/content: %v", i, err)
	}
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case []any:
		var sb strings.Builder
		for j, p := range v {
			part, _ := p.(map[string]any)
			text, ok := part["text"].(string)
			if part["type"] != "text" || !ok {
				return "", invalidParam(fmt.Sprintf("messages[%d].content[%d]", i, j), "/messages/%d/content/%d: only text parts are supported", i, j)
			}
			sb.WriteString(text)
		}
		return sb.String(), nil
	default:
		return "", invalidParam(fmt.Sprintf("messages[%d].content", i), "/messages/%d/content: must be a string or an array of text parts", i)
	}
}

// chatPrompt returns a conversation as engine messages (developer reads as system), and as the
// plain transcript a completion engine continues: one "Role: text" line per message, then
// "Assistant:".
func chatPrompt(msgs []api.OpenAIChatMessage) (string, []engine.Message, error) {
	var sb strings.Builder
	out := make([]engine.Message, 0, len(msgs))
	for i, m := range msgs {
		text, err := messageText(i, m.Content)
		if err != nil {
			return "", nil, err
		}
		role := string(m.Role)
		if m.Role == api.OpenAIChatMessageRoleDeveloper {
			role = string(api.OpenAIChatMessageRoleSystem)
		}
		out = append(out, engine.Message{Role: role, Content: text})
		sb.WriteString(strings.ToUpper(role[:1]) + role[1:])
		sb.WriteString(": ")
		sb.WriteString(text)
		sb.WriteByte('\n')
	}
	sb.WriteString("Assistant:")
	return sb.String(), out, nil
}

// completionPrompt returns the prompt: a string, or the one string of an array.
func completionPrompt(p api.OpenAICompletionRequest_Prompt) (string, error) {
	v, err := rawJSON(p)
	if err != nil {
		return "", invalidParam("prompt", "/prompt: %v", err)
	}
	if a, ok := v.([]any); ok && len(a) == 1 {
		v = a[0]
	}
	s, ok := v.(string)
	if !ok || s == "" {
		return "", invalidParam("prompt", "/prompt: a non-empty string or an array of one is required")
	}
	return s, nil
}

// modelPools returns the pools serving model (by model_id or model_ref), or 404 model_not_found.
func (s *Server) modelPools(model string) ([]pool.View, error) {
	var out []pool.View
	for _, v := range s.opts.Pools.Views() {
		if v.ModelID == model || v.ModelRef == model {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, &Error{Code: "NOT_FOUND", Message: fmt.Sprintf("the model %q does not exist here: GET /v1/models lists the models", model), Param: "model"}
	}
	return out, nil
}

// taskSpec builds the task of a facade request. A chat is a `chat` task (its messages) when a
// pool of the model serves that workload, else a `completion` of its transcript. The engine is
// the first ready pool's (else the first pool's) among those that serve the workload, and ctx
// the smallest ctx_max of that engine's pools, so that placement may choose any of them.
func (s *Server) taskSpec(ctx context.Context, c completion) (task.Spec, error) {
	views, err := s.modelPools(c.model)
	if err != nil {
		return task.Spec{}, err
	}
	workload := engine.WorkloadCompletion
	if c.chat && slices.ContainsFunc(views, func(v pool.View) bool { return slices.Contains(v.Workloads, engine.WorkloadChat) }) {
		workload = engine.WorkloadChat
	}
	views = slices.DeleteFunc(views, func(v pool.View) bool { return !slices.Contains(v.Workloads, workload) })
	if len(views) == 0 {
		return task.Spec{}, Errorf("POOL_UNAVAILABLE", "no pool of the model %q serves %s", c.model, workload)
	}
	pick := views[0]
	for _, v := range views {
		if v.Ready() {
			pick = v
			break
		}
	}
	ctxLen := 0
	for _, v := range views {
		if v.Engine == pick.Engine && (ctxLen == 0 || v.CtxMax < ctxLen) {
			ctxLen = v.CtxMax
		}
	}
	maxTokens := min(ctxLen, 32768)
	if c.maxTokens != nil {
		maxTokens = int(*c.maxTokens)
		if maxTokens > ctxLen {
			param := c.maxParam
			if param == "" {
				param = "max_tokens"
			}
			return task.Spec{}, invalidParam(param, "/%s: %d exceeds the model's context length %d", param, maxTokens, ctxLen)
		}
	}
	spec := task.Spec{
		ID: uuid.NewString(), SessionID: uuid.NewString(), Workload: workload, ModelRef: c.model,
		Engine: pick.Engine, Ctx: ctxLen, Priority: facadePriority(ctx), Seed: c.seed, Prompt: c.prompt,
		MaxTokens: maxTokens, OpenEnded: c.maxTokens == nil, Deadline: s.opts.OpenAIDeadline, Fingerprint: sha256.Sum256(RawBody(ctx)),
		CorrelationID: CorrelationID(ctx), Placement: task.Placement{AllowFallback: true},
		Transient: true, // its client waits on this one request: no task id to resume with, no session to name again
	}
	if workload == engine.WorkloadChat {
		// As for a chat task of the task API: the messages go to the engine, Prompt holds
		// their text joined.
		spec.Messages = c.messages
		var sb strings.Builder
		for _, m := range c.messages {
			sb.WriteString(m.Content)
		}
		spec.Prompt = sb.String()
	}
	if c.temperature != nil && *c.temperature == 0 {
		spec.Deterministic = true
	}
	return spec, nil
}

// runCompletion submits the task and answers with its stream or, once it ended, its result.
func (s *Server) runCompletion(ctx context.Context, c completion) (*openAIResponse, error) {
	spec, err := s.taskSpec(ctx, c)
	if err != nil {
		return nil, err
	}
	releaseBody(ctx) // the answer waits for the task: the spec holds what it needs
	// The answer is held open while the task runs, streamed or not: it counts against the key's
	// max_streams until it is written (a stream: until its last chunk, in visit).
	streamKey, err := s.openStream(ctx)
	if err != nil {
		return nil, err
	}
	defer s.closeStream(&streamKey)
	if _, err := s.admit(ctx, spec); err != nil {
		s.countRejection(ctx, err)
		return nil, err
	}
	t, err := s.opts.Tasks.Task(spec.ID)
	if err != nil {
		return nil, err
	}
	r := &openAIResponse{ctx: ctx, s: s, t: t, c: c, id: objectID(c.chat, t.ID()), correlation: CorrelationID(ctx),
		created: time.Now().Unix()}
	if snap, err := s.opts.Tasks.Get(ctx, spec.ID); err == nil {
		r.created = snap.Created.Unix()
	}
	if c.stream {
		r.streamKey, streamKey = streamKey, "" // visit closes it
		return r, nil
	}
	// Not streaming: wait for the task, cancelling it (per the disconnect policy) when the
	// client goes away, as a stream would.
	select {
	case <-t.Done():
	case <-ctx.Done():
		s.opts.Tasks.Abandoned(context.WithoutCancel(ctx), t)
		r.gone = true // nobody to answer: write nothing (and log no error)
		return r, nil
	}
	res, err := r.collect(ctx)
	if err != nil {
		return nil, err
	}
	r.result = &res
	return r, nil
}

// taskEvent is one decoded event of a task's log, as the facade needs it.
type taskEvent struct {
	name string
	// token
	text string
	// end
	tokensOut  int64
	stopReason string
	canceled   bool
	// error
	code, message string
	retriable     bool
	retryAfterMs  int64
}

// decodeEvents decodes the frames a cursor returned.
func decodeEvents(frames []byte) ([]taskEvent, error) {
	var out []taskEvent
	for {
		name, data, rest, ok, err := sse.NextFrame(frames)
		if err != nil {
			return out, err
		}
		if !ok {
			return out, nil
		}
		frames = rest
		te, keep, err := decodeEvent(name, data)
		if err != nil {
			return out, err
		}
		if keep {
			out = append(out, te)
		}
	}
}

// decodeEvent decodes one frame of a task's log; keep is false for the events the facade does
// not use (metrics).
func decodeEvent(name, data []byte) (te taskEvent, keep bool, err error) {
	te.name = string(name)
	switch te.name {
	case "token":
		lit, ok := sse.TokenText(data)
		if !ok {
			return te, false, fmt.Errorf("task event token: unexpected data %.64q", data)
		}
		err = json.Unmarshal(lit, &te.text)
	case "end":
		var d struct {
			TokensOut        int64  `json:"tokens_out"`
			StopReason       string `json:"stop_reason"`
			EngineStopReason string `json:"engine_stop_reason"`
			Canceled         bool   `json:"canceled"`
		}
		err = json.Unmarshal(data, &d)
		te.tokensOut, te.stopReason, te.canceled = d.TokensOut, d.StopReason, d.Canceled
		if d.EngineStopReason == finishContentFilter { // OpenAI's own word: its clients check for it
			te.stopReason = finishContentFilter
		}
	case "error":
		var d struct {
			Code         string `json:"code"`
			Message      string `json:"message"`
			Retriable    bool   `json:"retriable"`
			RetryAfterMs int64  `json:"retry_after_ms"`
		}
		err = json.Unmarshal(data, &d)
		te.code, te.message, te.retriable, te.retryAfterMs = d.Code, d.Message, d.Retriable, d.RetryAfterMs
	default:
		return te, false, nil
	}
	if err != nil {
		return te, false, fmt.Errorf("task event %s: %w", te.name, err)
	}
	return te, true, nil
}

// facadePriority is the class a completion runs in: interactive, or the calling key's
// max_priority when that is lower (a batch key's completions run as batch tasks rather than
// being refused).
func facadePriority(ctx context.Context) admission.Priority {
	if most, err := admission.ParsePriority(callerKey(ctx).MaxPriority); err == nil && most > admission.Interactive {
		return most
	}
	return admission.Interactive
}

// finishContentFilter is OpenAI's finish reason for a text its content filter ended.
const finishContentFilter = "content_filter"

// finishReason maps a task's stop reason to OpenAI's: a completion cut short by max_tokens or by
// a token budget's grant is "length" (clients that check for it see the cut), one an engine's
// content filter ended "content_filter", the model's own end or a stop word "stop".
func finishReason(stop string) string {
	switch stop {
	case string(engine.StopLimit), string(task.StopBudget):
		return "length"
	case finishContentFilter:
		return finishContentFilter
	}
	return "stop"
}

// result is a finished completion.
type result struct {
	text   string
	finish string
	usage  usage
}

type usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// openAIResponse answers a facade completion: as SSE chunks (c.stream) or as one JSON object
// (result). It implements the response objects of both completion operations.
type openAIResponse struct {
	ctx         context.Context
	s           *Server
	t           *task.Task
	c           completion
	id          string // the completion's (objectID)
	correlation string
	created     int64
	result      *result
	gone        bool // the client went away before the answer
	// streamKey is the key whose max_streams counts this stream until visit ends ("" : none).
	streamKey string
}

func (r *openAIResponse) VisitCreateChatCompletionResponse(w http.ResponseWriter) error {
	return r.visit(w)
}

func (r *openAIResponse) VisitCreateCompletionResponse(w http.ResponseWriter) error {
	return r.visit(w)
}

// usageOf is the task's usage once it ended.
func (r *openAIResponse) usageOf(ctx context.Context, tokensOut int64) usage {
	u := usage{CompletionTokens: tokensOut}
	if snap, err := r.s.opts.Tasks.Get(context.WithoutCancel(ctx), r.t.ID()); err == nil {
		u.PromptTokens = int64(snap.TokensIn)
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// collect reads the log of a finished task: its text and usage, or its failure as an API error.
func (r *openAIResponse) collect(ctx context.Context) (result, error) {
	cur := r.t.Subscribe(0, false)
	defer cur.Close()
	// The task has ended; its last frames may still wait for the journal to make them durable.
	var frames []byte
	for {
		var complete bool
		frames, complete = cur.Next(frames)
		if complete {
			break
		}
		select {
		case <-cur.Wake():
		case <-cur.Flushed():
		case <-ctx.Done():
			return result{}, ctx.Err()
		}
	}
	events, err := decodeEvents(frames)
	if err != nil {
		return result{}, err
	}
	var sb strings.Builder
	for _, ev := range events {
		switch ev.name {
		case "token":
			sb.WriteString(ev.text)
		case "end":
			if ev.canceled {
				return result{}, errCanceled(r.t.ID())
			}
			return result{text: sb.String(), finish: finishReason(ev.stopReason), usage: r.usageOf(ctx, ev.tokensOut)}, nil
		case "error":
			return result{}, &Error{Code: ev.code, Message: ev.message, TaskID: r.t.ID(),
				Retriable: ev.retriable || ev.retryAfterMs > 0, RetryAfter: time.Duration(ev.retryAfterMs) * time.Millisecond}
		}
	}
	return result{}, fmt.Errorf("task %s ended without an end or error event", r.t.ID())
}

// errCanceled answers a completion whose task was canceled (POST /v1/tasks/{id}/cancel): 409
// task_canceled, not retriable. As a 500 the OpenAI clients retried it, running the completion
// again as a new task, which undid the cancel.
func errCanceled(taskID string) *Error {
	return &Error{Code: "CANCELED", Message: "the completion's task was canceled (POST /v1/tasks/{id}/cancel)", TaskID: taskID}
}

// objectID is the completion's id: the task's, with OpenAI's prefix.
func objectID(chat bool, taskID string) string {
	if chat {
		return "chatcmpl-" + taskID
	}
	return "cmpl-" + taskID
}

// Wire forms (kept here: the generated types nest anonymous structs).
type (
	chatMessage struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	chatDelta struct {
		Role    string `json:"role,omitempty"`
		Content string `json:"content,omitempty"`
	}
	chatChoice struct {
		Index        int          `json:"index"`
		Message      *chatMessage `json:"message,omitempty"`
		Delta        *chatDelta   `json:"delta,omitempty"`
		FinishReason *string      `json:"finish_reason"`
	}
	textChoice struct {
		Index        int     `json:"index"`
		Text         string  `json:"text"`
		Logprobs     any     `json:"logprobs"`
		FinishReason *string `json:"finish_reason"`
	}
	completionObject struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		Model   string `json:"model"`
		Choices any    `json:"choices"`
		Usage   *usage `json:"usage,omitempty"`
	}
)

// object builds a completion object or chunk. finish is nil for a chunk that does not end the
// choice; role is the chat role to announce in a chunk's delta.
func (r *openAIResponse) object(chunk bool, text string, role string, finish *string, u *usage) completionObject {
	o := completionObject{ID: r.id, Created: r.created, Model: r.c.model, Usage: u}
	switch {
	case r.c.chat && chunk:
		o.Object = "chat.completion.chunk"
		o.Choices = []chatChoice{{Delta: &chatDelta{Role: role, Content: text}, FinishReason: finish}}
	case r.c.chat:
		o.Object = "chat.completion"
		o.Choices = []chatChoice{{Message: &chatMessage{Role: "assistant", Content: text}, FinishReason: finish}}
	default:
		o.Object = "text_completion"
		o.Choices = []textChoice{{Text: text, FinishReason: finish}}
	}
	return o
}

func (r *openAIResponse) setHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set(HeaderCorrelationID, r.correlation)
	h.Set(HeaderTaskID, r.t.ID())
}

func (r *openAIResponse) visit(w http.ResponseWriter) error {
	defer r.s.closeStream(&r.streamKey)
	if r.gone {
		return nil
	}
	if r.result != nil {
		res := r.result
		body, err := json.Marshal(r.object(false, res.text, "", &res.finish, &res.usage))
		if err != nil {
			return err
		}
		r.setHeaders(w)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, err = w.Write(body)
		return err
	}
	return r.stream(w)
}

// stream writes the task's tokens as OpenAI chunks, as they come.
func (r *openAIResponse) stream(w http.ResponseWriter) error {
	if _, ok := w.(http.Flusher); !ok {
		return errors.New("streaming unsupported by the response writer")
	}
	out := streamWriter{w: w, rc: http.NewResponseController(flushErrorWriter(w)), timeout: r.s.opts.StreamWriteTimeout}
	defer out.extend()
	r.setHeaders(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := out.flush(); err != nil {
		r.disconnected(nil)
		return nil
	}
	m := r.s.opts.Metrics
	m.StreamsOpen.Inc()
	defer m.StreamsOpen.Dec()
	cur := r.t.Subscribe(0, false)
	defer cur.Close()
	hb := newHeartbeat(r.s.opts.Heartbeat)
	defer hb.t.Stop()
	var frames, buf []byte
	role := ""
	if r.c.chat {
		role = "assistant"
	}
	chunkHead := r.appendChunkHead(nil)
	for {
		var complete bool
		frames, complete = cur.Next(frames[:0])
		buf = buf[:0]
		done := false
		for rest := frames; ; {
			name, data, next, ok, err := sse.NextFrame(rest)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			rest = next
			if string(name) == "token" {
				// A token's chunk is written around its text as the task's frame holds it,
				// already a JSON string: no decoding, no reflection.
				lit, ok := sse.TokenText(data)
				if !ok {
					return fmt.Errorf("task event token: unexpected data %.64q", data)
				}
				buf = r.appendTokenChunk(buf, chunkHead, role, lit)
				role = ""
				continue
			}
			ev, keep, err := decodeEvent(name, data)
			if err != nil {
				return err
			}
			if !keep {
				continue
			}
			switch ev.name {
			case "end":
				if ev.canceled {
					buf = appendError(buf, errCanceled(""))
				} else {
					fr := finishReason(ev.stopReason)
					buf = appendData(buf, r.object(true, "", role, &fr, nil))
					if r.c.includeUsage {
						u := r.usageOf(r.ctx, ev.tokensOut)
						o := r.object(true, "", "", nil, &u)
						o.Choices = []struct{}{}
						buf = appendData(buf, o)
					}
					buf = append(buf, "data: [DONE]\n\n"...)
				}
				done = true
			case "error":
				buf = appendError(buf, &Error{Code: ev.code, Message: ev.message})
				done = true
			}
		}
		if len(buf) > 0 {
			if err := out.write(buf); err != nil {
				r.disconnected(cur)
				return nil
			}
		}
		if done || complete {
			return nil
		}
		select {
		case <-cur.Wake():
		case <-cur.Flushed():
		case <-hb.t.C:
			if !hb.due(out.last) {
				continue
			}
			if err := out.write([]byte(sse.Heartbeat)); err != nil {
				r.disconnected(cur)
				return nil
			}
		case <-r.ctx.Done():
			r.disconnected(cur)
			return nil
		}
	}
}

// appendChunkHead appends what every chunk of the stream starts with, as encoding/json writes
// a completionObject: `data: {"id":...,"object":...,"created":...,"model":...,"choices":[{"index":0,`.
func (r *openAIResponse) appendChunkHead(dst []byte) []byte {
	object := "text_completion"
	if r.c.chat {
		object = "chat.completion.chunk"
	}
	dst = append(dst, `data: {"id":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, r.id)
	dst = append(dst, `,"object":"`...)
	dst = append(dst, object...)
	dst = append(dst, `","created":`...)
	dst = strconv.AppendInt(dst, r.created, 10)
	dst = append(dst, `,"model":`...)
	dst = sse.AppendStringAsEncodingJSON(dst, r.c.model)
	return append(dst, `,"choices":[{"index":0,`...)
}

// appendTokenChunk appends the chunk of one token whose text is the JSON string lit, as
// appendData(dst, r.object(true, text, role, nil, nil)) would (an empty content or role is
// left out, as omitempty does).
func (r *openAIResponse) appendTokenChunk(dst, head []byte, role string, lit []byte) []byte {
	dst = append(dst, head...)
	if !r.c.chat {
		dst = append(dst, `"text":`...)
		dst = append(dst, lit...)
		return append(dst, ",\"logprobs\":null,\"finish_reason\":null}]}\n\n"...)
	}
	dst = append(dst, `"delta":{`...)
	if role != "" {
		dst = append(dst, `"role":`...)
		dst = sse.AppendStringAsEncodingJSON(dst, role)
	}
	if string(lit) != `""` {
		if role != "" {
			dst = append(dst, ',')
		}
		dst = append(dst, `"content":`...)
		dst = append(dst, lit...)
	}
	return append(dst, "},\"finish_reason\":null}]}\n\n"...)
}

// disconnected handles a client that went away before the task ended. Its cursor (nil: none
// yet) is closed first: the reader that left must not count as attached when the task's
// disconnect policy looks.
func (r *openAIResponse) disconnected(cur *task.Cursor) {
	if cur != nil {
		cur.Close()
	}
	select {
	case <-r.t.Done():
		return
	default:
	}
	r.s.opts.Tasks.Disconnected(context.WithoutCancel(r.ctx), r.t)
}

// appendData appends one `data: JSON` frame.
func appendData(dst []byte, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil { // cannot happen: the wire types marshal
		panic(err) //nolint:forbidigo // a programming error in the wire types
	}
	dst = append(dst, "data: "...)
	dst = append(dst, b...)
	return append(dst, '\n', '\n')
}

// appendError appends a stream's error frame.
func appendError(dst []byte, e *Error) []byte {
	_, body := openAIError(e)
	return appendData(dst, body)
}

// openAIErrorBody is the wire form of OpenAIErrorResponse.
type openAIErrorBody struct {
	Error openAIErrorDetail `json:"error"`
}

type openAIErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// openAIError renders an API error as OpenAI does: the status of the one table (a wrong key is
// 401 like a missing one: OpenAI clients raise AuthenticationError only for 401; a valid key
// that may not do this is 403, PermissionDeniedError), and its type and code.
func openAIError(e *Error) (int, openAIErrorBody) {
	status := statusOf(e.Code)
	typ, code := "invalid_request_error", "invalid_value"
	switch e.Code {
	case "UNAUTHORIZED":
		status, code = http.StatusUnauthorized, "invalid_api_key"
	case "FORBIDDEN":
		status, code = http.StatusForbidden, "insufficient_permissions"
		if e.badKey {
			status, code = http.StatusUnauthorized, "invalid_api_key"
		}
	case "NOT_FOUND":
		code = "model_not_found"
	case "PAYLOAD_TOO_LARGE":
		code = "payload_too_large"
	case "UNSUPPORTED_MEDIA_TYPE":
		code = "unsupported_media_type"
	case "METHOD_NOT_ALLOWED":
		code = "method_not_allowed"
	case "CANCELED":
		code = "task_canceled"
	case "BUDGET_EXCEEDED": // 429 as OpenAI's spent quota, which its clients do not retry
		typ, code = "insufficient_quota", "insufficient_quota"
	default:
		switch {
		case status == http.StatusTooManyRequests:
			typ, code = "requests", "rate_limit_exceeded"
		case status == http.StatusServiceUnavailable:
			typ, code = "server_error", "service_unavailable"
		case status >= 500:
			typ, code = "server_error", "internal_error"
		}
	}
	msg := textclip.Clip(e.Message, maxMessage)
	d := openAIErrorDetail{Message: msg, Type: typ, Code: &code}
	if e.Param != "" {
		p := e.Param
		d.Param = &p
	}
	return status, openAIErrorBody{Error: d}
}

// openAIParam names the request field at path (JSON pointer segments, the body's top level
// first) as OpenAI's error `param` does: "max_tokens", "messages[0].content". "" for none.
func openAIParam(path []string) string {
	var b strings.Builder
	for _, seg := range path {
		if _, err := strconv.Atoi(seg); err == nil && b.Len() > 0 {
			b.WriteString("[" + seg + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(seg)
	}
	return b.String()
}

// shouldRetry sets x-should-retry, which OpenAI's clients obey over their own rule (they retry
// every 408, 409, 429 and 5xx): "false" on an answer of those statuses that the daemon marks
// not retriable (a spent budget, no pool for the model), so a client does not wait out its
// retries for the same answer. An internal error is left to the client's rule.
func shouldRetry(h http.Header, status int, e *Error) {
	if e.Retriable || e.Code == "INTERNAL" {
		return
	}
	if status == http.StatusRequestTimeout || status == http.StatusConflict || status == http.StatusTooManyRequests || status >= 500 {
		h.Set("x-should-retry", "false")
	}
}

// openAIRateLimitHeaders sets OpenAI's x-ratelimit-* headers on a refusal.
func openAIRateLimitHeaders(h http.Header, retryAfter time.Duration) {
	h.Set("x-ratelimit-remaining-requests", "0")
	h.Set("x-ratelimit-reset-requests", retryAfter.Round(time.Millisecond).String())
}
