package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/orchestratord/orchestratord/sdk"
)

// Exit codes (documented in `orchctl --help`).
const (
	exitOK           = 0
	exitError        = 1   // a local or network error
	exitUsage        = 2   // bad command line
	exitClient       = 3   // the daemon refused the request (4xx other than 429)
	exitBackpressure = 4   // 429: the queue is full or a rate limit hit (after the retries)
	exitServer       = 5   // 5xx: the daemon or no pool could serve it
	exitTaskFailed   = 6   // the task ran and failed (an `error` event)
	exitInterrupted  = 130 // interrupted (Ctrl-C): run cancels its task, tasks watch leaves it running
)

const exitCodesHelp = `Exit codes:
  0    success
  1    local or network error
  2    bad command line
  3    the daemon refused the request (HTTP 4xx other than 429)
  4    backpressure: HTTP 429 after the retries (queue full, rate limited)
  5    the daemon failed or no pool could serve it (HTTP 5xx)
  6    the task failed or was canceled (by someone else) while it ran
  130  interrupted (Ctrl-C): run cancels its task; tasks watch leaves it running`

// defaultURL is the daemon's default listen address.
const defaultURL = "http://127.0.0.1:8080"

// version is set with -ldflags "-X main.version=..."; otherwise the build info is used.
var version = ""

// commit is set with -ldflags "-X main.commit=..." (make build); otherwise the build info's.
var commit = ""

// usageError marks errors of the command line.
type usageError struct{ error }

// globals are the connection settings every command shares.
type globals struct {
	url, apiKey, stateDir string
	retries               int
	getenv                func(string) string
}

// client builds the SDK client: flags, then ORCHD_URL / ORCHD_API_KEY, then (for a loopback
// URL) the key the daemon generated into <state-dir>/api-key.
func (g *globals) client() (*sdk.Client, error) {
	u := firstOf(g.url, g.getenv("ORCHD_URL"), defaultURL)
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	// Trimmed like the key file: a key exported with its newline (a secret mounted as is) would
	// be an invalid header value and fail every request.
	key := firstOf(strings.TrimSpace(g.apiKey), strings.TrimSpace(g.getenv("ORCHD_API_KEY")))
	if key == "" && isLoopback(u) {
		dir := firstOf(g.stateDir, g.getenv("ORCHD_STATE_DIR"), ".orchestratord")
		if b, err := os.ReadFile(filepath.Join(dir, "api-key")); err == nil {
			key = strings.TrimSpace(string(b))
		}
	}
	retries := g.retries
	if retries <= 0 {
		retries = -1 // sdk: never
	}
	return sdk.New(u, sdk.Options{APIKey: key, MaxRetries: retries})
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// isLoopback reports whether the URL's host is localhost or a loopback address.
func isLoopback(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// run executes the command line and returns the exit code.
func run(ctx context.Context, args []string, io stdio, getenv func(string) string) int {
	// The commands get ctx from cobra (ExecuteContext → cmd.Context()).
	root := newRoot(io, getenv) //nolint:contextcheck // cobra carries ctx to the commands
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		fmt.Fprintln(io.err, "orchctl: interrupted")
	} else {
		fmt.Fprintln(io.err, "orchctl:", errorLine(err))
	}
	return exitCode(err)
}

// exitCode maps an error to the documented exit code.
func exitCode(err error) int {
	var apiErr *sdk.APIError
	var evErr *sdk.ErrorEvent
	var uErr usageError
	switch {
	case errors.As(err, &uErr):
		return exitUsage
	case errors.As(err, &apiErr):
		switch {
		case apiErr.StatusCode == 429:
			return exitBackpressure
		case apiErr.StatusCode >= 500:
			return exitServer
		case apiErr.StatusCode >= 400:
			return exitClient
		}
		return exitError
	case errors.As(err, &evErr), errors.Is(err, errCanceled):
		return exitTaskFailed
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	return exitError
}

func newRoot(io stdio, getenv func(string) string) *cobra.Command {
	g := &globals{getenv: getenv}
	root := &cobra.Command{
		Use:   "orchctl",
		Short: "Command-line client of orchestratord",
		Long: `orchctl talks to an orchestratord daemon through its task API.

The daemon's URL comes from --url, then ORCHD_URL, then ` + defaultURL + `.
The API key comes from --api-key, then ORCHD_API_KEY, then (when the URL is a loopback
address) the key the daemon generated into <state-dir>/api-key, where the state directory is
--state-dir, then ORCHD_STATE_DIR, then .orchestratord.

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(io.in)
	root.SetOut(io.out)
	root.SetErr(io.err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.url, "url", "", "daemon URL (env ORCHD_URL; default "+defaultURL+")")
	pf.StringVar(&g.apiKey, "api-key", "", "API key (env ORCHD_API_KEY; default <state-dir>/api-key on loopback)")
	pf.IntVar(&g.retries, "retries", sdk.DefaultMaxRetries, "how often a retriable 429 is retried after its Retry-After")
	pf.StringVar(&g.stateDir, "state-dir", "", "the daemon's state directory (env ORCHD_STATE_DIR; default .orchestratord)")

	root.AddCommand(newRunCmd(g, io), newTasksCmd(g, io), newSessionsCmd(g, io), newArtifactsCmd(g, io),
		newPoolsCmd(g, io), newCapabilitiesCmd(g, io), newVersionCmd(g, io))
	guardGroups(root)
	return root
}

// guardGroups makes every command that only groups others (the root, tasks, pools, ...) refuse
// an unknown subcommand as a bad command line (exit 2), as a script needs: cobra would print
// the group's help and exit 0 ("orchctl tasks cancle ID" canceling nothing), or exit 1 at the
// root. Without arguments a group prints its help.
func guardGroups(c *cobra.Command) {
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return usageError{errors.New(msg)}
		}
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	for _, sub := range c.Commands() {
		guardGroups(sub)
	}
}

// exactArgs is cobra.ExactArgs reporting a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// printJSON writes v as indented JSON.
func printJSON(io stdio, v any) error {
	enc := json.NewEncoder(io.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newVersionCmd(g *globals, io stdio) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print orchctl's version, commit and Go version, and the daemon's API version",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, commit, goVersion := buildInfo()
			fmt.Fprintf(io.out, "orchctl %s (commit %s, %s)\n", v, commit, goVersion)
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			caps, err := c.Capabilities(cmd.Context())
			if err != nil { // orchctl's own line is out; the daemon's error is an error (exit 1, 3, 5)
				return fmt.Errorf("daemon: %w", err)
			}
			fmt.Fprintf(io.out, "daemon API %s\n", caps.ApiVersion)
			return nil
		},
	}
}

// buildInfo returns the version, the VCS commit and the Go version of this binary.
func buildInfo() (v, commit, goVersion string) {
	v, commit, goVersion = version, firstOf(commitStamp(), "unknown"), "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if v == "" {
			v = "devel"
		}
		return v, commit, goVersion
	}
	goVersion = bi.GoVersion
	if v == "" {
		v = bi.Main.Version
	}
	if v == "" {
		v = "devel"
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified {
		commit += "-dirty"
	}
	return v, commit, goVersion
}

// commitStamp is the commit make build stamped into the binary ("" none).
func commitStamp() string { return commit }
