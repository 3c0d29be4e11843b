package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
)

// TestStateDirWritableByOthersRefused: a state directory that every user may write to
// (state_dir: /tmp/orchd, created first by someone else, mode 0777) lets another user prepare
// files the daemon then writes its secrets through: here api-key.tmp, made readable by all,
// which generatedKey truncates, fills with the new all-scopes key (os.WriteFile keeps an
// existing file's mode) and renames to api-key. The daemon must refuse such a directory.
func TestStateDirWritableByOthersRefused(t *testing.T) {
	state := filepath.Join(t.TempDir(), "orchd")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o777); err != nil { // as a pre-created shared directory is
		t.Fatal(err)
	}
	planted := filepath.Join(state, "api-key.tmp")
	if err := os.WriteFile(planted, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(planted, 0o666); err != nil {
		t.Fatal(err)
	}
	cfg := privateDirConfig(t, state)
	a, err := app.New(cfg, app.Options{})
	if err == nil {
		fi, _ := os.Stat(a.APIKeyPath())
		t.Fatalf("app.New accepted the state directory %s (mode 0777): the generated key is in %s, mode %#o, readable by every user",
			state, a.APIKeyPath(), fi.Mode().Perm())
	}
	if !strings.Contains(err.Error(), "state dir "+state) {
		t.Errorf("error %q does not name the state directory", err)
	}
}

// TestAPIKeyFileReadableByOthersRefused: an api-key file that other users may read (one
// an operator wrote, or restored from a backup, with the usual umask: 0644) in a state
// directory they may enter (0755) hands every local user the all-scopes key. The daemon must
// not silently serve with it.
func TestAPIKeyFileReadableByOthersRefused(t *testing.T) {
	state := filepath.Join(t.TempDir(), "orchd")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o755); err != nil { // mkdir with the usual umask
		t.Fatal(err)
	}
	key := filepath.Join(state, "api-key")
	if err := os.WriteFile(key, []byte("operator-written-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := privateDirConfig(t, state)
	a, err := app.New(cfg, app.Options{})
	if err == nil {
		fi, _ := os.Stat(a.APIKeyPath())
		t.Fatalf("app.New serves with %s, mode %#o: every local user can read the all-scopes key", a.APIKeyPath(), fi.Mode().Perm())
	}
	if !strings.Contains(err.Error(), key) {
		t.Errorf("error %q does not name the key file", err)
	}
}

// auditConfig is a configuration with no API key (the daemon's generated one) and state
// directory state.
func privateDirConfig(t *testing.T, state string) *config.Config {
	t.Helper()
	return privateDirConfigJournal(t, state, "{enabled: false}")
}

// privateDirConfigJournal is privateDirConfig with the journal's configuration.
func privateDirConfigJournal(t *testing.T, state, journal string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	yaml := "addr: 127.0.0.1:0\nstate_dir: " + state + "\njournal: " + journal + "\n" +
		"pools: [{id: p1, engine: llamacpp, model_ref: models/fake.gguf, ctx_max: 512, slots: 1, replicas: [{url: \"http://127.0.0.1:1\"}]}]\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Overrides{ConfigFile: path}) // no key configured: the generated one
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestJournalDirWritableByOthersRefused: a journal directory of its own (journal.dir) that
// every user may write to lets another user forge the tasks a restart replays, as its
// state directory would: the daemon refuses it too.
func TestJournalDirWritableByOthersRefused(t *testing.T) {
	root := t.TempDir()
	jdir := filepath.Join(root, "journal")
	if err := os.Mkdir(jdir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(jdir, 0o777); err != nil { // as a pre-created shared directory is
		t.Fatal(err)
	}
	cfg := privateDirConfigJournal(t, filepath.Join(root, "state"), "{dir: "+jdir+"}")
	if _, err := app.New(cfg, app.Options{}); err == nil {
		t.Fatalf("app.New accepted the journal directory %s (mode 0777)", jdir)
	} else if !strings.Contains(err.Error(), "journal dir "+jdir) {
		t.Errorf("error %q does not name the journal directory", err)
	}
}
