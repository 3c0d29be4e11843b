package sdk_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/internal/testdaemon"
	"github.com/orchestratord/orchestratord/sdk"
)

// daemon starts an in-process daemon over the fake engine (which generates the tiny model's
// " The quick brown fox jumps over the lazy dog.") and returns its URL, its API key and a stop
// function. Against a real daemon use its URL and key (see the README).
func daemon(eng fake.Options, config ...string) (url, key string, stop func()) {
	d, err := testdaemon.Start(testdaemon.Options{Fake: eng, Sections: strings.Join(config, "\n")})
	if err != nil {
		log.Fatal(err)
	}
	return d.URL, testdaemon.Key, func() { _ = d.Close() }
}

// Submit a completion and print its text as the tokens arrive.
func Example() {
	url, key, stop := daemon(fake.Options{})
	defer stop()
	ctx := context.Background()

	c, err := sdk.New(url, sdk.Options{APIKey: key})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	req := sdk.Completion("tiny", "Once upon a time")
	req.MaxTokens = 10
	adm, err := c.Submit(ctx, req) // task_id and session_id are generated
	if err != nil {
		log.Fatal(err)
	}
	for ev, err := range c.Stream(ctx, adm.TaskId) {
		if err != nil {
			log.Fatal(err)
		}
		switch ev := ev.(type) {
		case *sdk.Started:
			fmt.Println("queue position:", ev.QueuePosition)
		case *sdk.Token:
			fmt.Print(ev.Text)
		case *sdk.End:
			fmt.Printf("\n%d tokens, stop reason %s\n", ev.TokensOut, ev.StopReason)
		case *sdk.ErrorEvent:
			log.Fatal(ev)
		}
	}
	// Output:
	// queue position: 0
	//  The quick brown fox jumps over the lazy dog.
	// 10 tokens, stop reason limit
}

// Resume a stream after the last event a previous reader saw (for example one that crashed
// and saved the id). Within one Stream call a dropped connection is resumed automatically.
// The daemon keeps a task whose reader went away only with stream.cancel_on_disconnect: false.
func ExampleClient_Stream_resume() {
	url, key, stop := daemon(fake.Options{}, "stream: {cancel_on_disconnect: false}")
	defer stop()
	ctx := context.Background()
	c, err := sdk.New(url, sdk.Options{APIKey: key})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	req := sdk.Completion("tiny", "Once upon a time")
	req.MaxTokens = 10
	adm, err := c.Submit(ctx, req)
	if err != nil {
		log.Fatal(err)
	}
	var saved int64
	for ev, err := range c.Stream(ctx, adm.TaskId, sdk.KeepTask()) {
		if err != nil {
			log.Fatal(err)
		}
		if tok, ok := ev.(*sdk.Token); ok && tok.Index == 4 {
			saved = ev.EventID()
			break // the reader goes away; KeepTask keeps the task running
		}
	}
	for ev, err := range c.Stream(ctx, adm.TaskId, sdk.After(saved)) {
		if err != nil {
			log.Fatal(err)
		}
		if tok, ok := ev.(*sdk.Token); ok {
			fmt.Printf("%d%q ", tok.Index, tok.Text)
		}
	}
	fmt.Println()
	// Output:
	// 5" over" 6" the" 7" lazy" 8" dog" 9"."
}

// Cancel a task; its stream ends with End{Canceled: true}. (Breaking out of a Stream loop
// cancels the task too, unless KeepTask is given.)
func ExampleClient_Cancel() {
	url, key, stop := daemon(fake.Options{FirstTokenDelay: time.Hour}) // a task that would take long

	defer stop()
	ctx := context.Background()
	c, err := sdk.New(url, sdk.Options{APIKey: key})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	req := sdk.Completion("tiny", "Once upon a time")
	req.MaxTokens = 1000
	req.Priority = client.Batch
	adm, err := c.Submit(ctx, req)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Cancel(ctx, adm.TaskId); err != nil {
		log.Fatal(err)
	}
	for ev, err := range c.Stream(ctx, adm.TaskId) {
		if err != nil {
			log.Fatal(err)
		}
		if end, ok := ev.(*sdk.End); ok {
			fmt.Println("canceled:", end.Canceled)
		}
	}
	st, err := c.Task(ctx, adm.TaskId)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("state:", st.State)
	// Output:
	// canceled: true
	// state: canceled
}

// Store a content-addressed artifact and read it back.
func ExampleClient_PutArtifact() {
	url, key, stop := daemon(fake.Options{})
	defer stop()
	ctx := context.Background()
	c, err := sdk.New(url, sdk.Options{APIKey: key})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ref, err := c.PutArtifact(ctx, client.Artifact{Kind: "plan", Content: map[string]any{"steps": []any{"read", "write"}}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ref.Id[:7], len(ref.Id))
	a, err := c.Artifact(ctx, ref.Id)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(a.Kind, a.Content["steps"])
	// Output:
	// sha256: 71
	// plan [read write]
}
