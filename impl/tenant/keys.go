package tenant

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sync/atomic"

	"gopkg.in/yaml.v3"

	"github.com/orchestratord/orchestratord/impl/internal/yamldoc"
)

// Scope is a permission a key holds; the contract names the scope each operation needs
// (x-scopes).
type Scope string

// The scopes.
const (
	ScopeTasks     Scope = "tasks"
	ScopeSessions  Scope = "sessions"
	ScopeArtifacts Scope = "artifacts"
	ScopeControl   Scope = "control"
	ScopeMetrics   Scope = "metrics"
)

// AllScopes are the scopes of a key with every permission (the generated loopback key, the plain
// keys of api_keys_file and ORCHD_API_KEYS).
var AllScopes = []Scope{ScopeTasks, ScopeSessions, ScopeArtifacts, ScopeControl, ScopeMetrics}

// DefaultName names the keys that come without a name (the generated key, plain keys): they
// are one tenant together, as before keys had names.
const DefaultName = "default"

// Key is one configured key. Its secret is kept only as a digest.
type Key struct {
	Name   string
	Digest [32]byte
	Scopes []Scope
	// Weight is the key's share in fair queueing (default 1).
	Weight float64
	// RPM limits task submissions per minute, TPM the tokens (max_tokens reserved at admission)
	// per minute; 0: unlimited.
	RPM, TPM int
	// MaxPriority is the highest priority class the key may submit ("" : any).
	MaxPriority string
	// TokenBudget is the key's total token budget (0: none).
	TokenBudget int64
	// MaxStreams limits the responses the key holds open while tasks run: event streams (GET
	// /v1/tasks/{id}/stream) and OpenAI completions, streamed or not; 0: unlimited.
	MaxStreams int
}

// Has reports whether k holds scope s.
func (k *Key) Has(s Scope) bool { return slices.Contains(k.Scopes, s) }

// Fingerprint is a short, non-reversible identifier of a secret for logs.
func Fingerprint(secret string) string {
	d := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(d[:4])
}

// PlainKey returns the all-scopes key named DefaultName for a secret given without a name.
func PlainKey(secret string) Key {
	return Key{Name: DefaultName, Digest: sha256.Sum256([]byte(secret)), Scopes: slices.Clone(AllScopes), Weight: 1}
}

// fileKey is one entry of the keys file.
type fileKey struct {
	Name        string   `yaml:"name"`
	Key         string   `yaml:"key"`
	KeySHA256   string   `yaml:"key_sha256"`
	Scopes      []string `yaml:"scopes"`
	Weight      *float64 `yaml:"weight"`
	RPM         wholeInt `yaml:"rpm"`
	TPM         wholeInt `yaml:"tpm"`
	MaxPriority string   `yaml:"max_priority"`
	TokenBudget wholeInt `yaml:"token_budget"`
	MaxStreams  wholeInt `yaml:"max_streams"`
}

// wholeInt is a limit written as a whole number. YAML's decoder truncates a fraction into an
// int (rpm: 0.5 became 0, which means no limit); a fraction is refused instead.
type wholeInt int64

func (w *wholeInt) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		return fmt.Errorf("line %d: want a whole number, got %q", n.Line, n.Value)
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		return err
	}
	*w = wholeInt(v)
	return nil
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ParseFile reads a keys file.
func ParseFile(path string) ([]Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	keys, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("keys file %s: %w", path, err)
	}
	return keys, nil
}

// Parse decodes a keys file (YAML: keys: [{name, key or key_sha256, scopes, weight, rpm, tpm,
// max_priority, token_budget, max_streams}]) strictly: unknown fields, duplicate names or secrets, a short
// key, an unknown scope or priority and negative limits are errors naming the entry.
func Parse(data []byte) ([]Key, error) {
	var doc struct {
		Keys []fileKey `yaml:"keys"`
	}
	if err := yamldoc.Decode(data, &doc); err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	if len(doc.Keys) == 0 {
		return nil, errors.New("keys: at least one key is required")
	}
	out := make([]Key, 0, len(doc.Keys))
	names := map[string]bool{}
	digests := map[[32]byte]bool{}
	for i, fk := range doc.Keys {
		fail := func(field, format string, args ...any) error {
			return fmt.Errorf("keys[%d].%s: %s", i, field, fmt.Sprintf(format, args...))
		}
		if !nameRe.MatchString(fk.Name) {
			return nil, fail("name", "must match %s, got %q", nameRe, fk.Name)
		}
		if fk.Name == DefaultName { // it would own, and read, the unnamed keys' tasks and sessions
			return nil, fail("name", "%q is reserved for the keys that come without a name (the generated key, api_keys_file, ORCHD_API_KEYS)", DefaultName)
		}
		if names[fk.Name] {
			return nil, fail("name", "%q is used twice", fk.Name)
		}
		names[fk.Name] = true
		k := Key{Name: fk.Name, RPM: int(fk.RPM), TPM: int(fk.TPM), MaxPriority: fk.MaxPriority, TokenBudget: int64(fk.TokenBudget),
			MaxStreams: int(fk.MaxStreams), Weight: 1}
		switch {
		case fk.Key != "" && fk.KeySHA256 != "":
			return nil, fail("key", "give key or key_sha256, not both")
		case fk.Key != "":
			if len(fk.Key) < 16 {
				return nil, fail("key", "too short (at least 16 characters)")
			}
			k.Digest = sha256.Sum256([]byte(fk.Key))
		case fk.KeySHA256 != "":
			d, err := hex.DecodeString(fk.KeySHA256)
			if err != nil || len(d) != 32 {
				return nil, fail("key_sha256", "must be 64 hex digits")
			}
			copy(k.Digest[:], d)
		default:
			return nil, fail("key", "one of key or key_sha256 is required")
		}
		if digests[k.Digest] {
			return nil, fail("key", "the same key is given twice")
		}
		digests[k.Digest] = true
		if len(fk.Scopes) == 0 {
			return nil, fail("scopes", "at least one scope is required (of %v)", AllScopes)
		}
		for _, s := range fk.Scopes {
			if !slices.Contains(AllScopes, Scope(s)) {
				return nil, fail("scopes", "unknown scope %q (want one of %v)", s, AllScopes)
			}
			if !k.Has(Scope(s)) {
				k.Scopes = append(k.Scopes, Scope(s))
			}
		}
		if fk.Weight != nil {
			if !(*fk.Weight > 0 && *fk.Weight <= 1000) { // NaN too
				return nil, fail("weight", "must be in (0, 1000], got %v", *fk.Weight)
			}
			k.Weight = *fk.Weight
		}
		switch {
		case fk.RPM < 0:
			return nil, fail("rpm", "must not be negative, got %d", fk.RPM)
		case fk.TPM < 0:
			return nil, fail("tpm", "must not be negative, got %d", fk.TPM)
		case fk.MaxStreams < 0:
			return nil, fail("max_streams", "must not be negative, got %d", fk.MaxStreams)
		case fk.TokenBudget < 0:
			return nil, fail("token_budget", "must not be negative, got %d", fk.TokenBudget)
		}
		switch fk.MaxPriority {
		case "", "interactive", "batch":
		default:
			return nil, fail("max_priority", "must be interactive or batch, got %q", fk.MaxPriority)
		}
		out = append(out, k)
	}
	return out, nil
}

// set is one immutable generation of keys.
type set struct{ keys []Key }

// Ring is the current set of keys, replaced atomically on reload.
type Ring struct{ cur atomic.Pointer[set] }

// NewRing returns a Ring holding keys.
func NewRing(keys []Key) *Ring {
	r := &Ring{}
	r.Replace(keys)
	return r
}

// Replace swaps the key set; requests already authenticated keep the key they matched.
func (r *Ring) Replace(keys []Key) { r.cur.Store(&set{keys: slices.Clone(keys)}) }

// Len is the number of keys.
func (r *Ring) Len() int { return len(r.cur.Load().keys) }

// Lookup returns the key whose secret is presented. Every stored digest is compared, in
// constant time, whatever matches.
func (r *Ring) Lookup(presented string) (*Key, bool) {
	d := sha256.Sum256([]byte(presented))
	s := r.cur.Load()
	match := -1
	for i := range s.keys {
		eq := subtle.ConstantTimeCompare(d[:], s.keys[i].Digest[:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return nil, false
	}
	k := s.keys[match]
	return &k, true
}

// Names lists the key names (sorted, unique), for bounded metric labels.
func (r *Ring) Names() []string {
	var out []string
	for _, k := range r.cur.Load().keys {
		out = append(out, k.Name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
