package artifact

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of arrays and objects in a canonicalised value (the same bound
// encoding/json's decoder applies).
const MaxDepth = 10000

// Canonical returns the canonical JSON encoding of v (see the package doc). It fails with
// ErrInvalid when v is outside the JSON data model.
func Canonical(v any) ([]byte, error) {
	e := encoder{}
	if err := e.value(v, 0); err != nil {
		return nil, err
	}
	return e.buf, nil
}

// ParseJSON decodes one JSON value, keeping numbers as json.Number, and refuses trailing
// data. It also refuses what encoding/json would silently replace with U+FFFD, since that
// changes content that is then content-addressed: bytes that are not valid UTF-8, and \u
// escapes of unpaired UTF-16 surrogates. Errors match ErrInvalid.
func ParseJSON(data []byte) (any, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: the JSON text is not valid UTF-8", ErrInvalid)
	}
	if off := loneSurrogate(data); off >= 0 {
		return nil, fmt.Errorf("%w: offset %d: \\u escape of an unpaired UTF-16 surrogate", ErrInvalid, off)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON value", ErrInvalid)
	}
	return v, nil
}

// loneSurrogate returns the offset of the first \u escape, inside a JSON string, of a
// surrogate that is not part of a high-low pair, or -1. Malformed JSON is left to the decoder.
func loneSurrogate(data []byte) int {
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if !inString {
			if c == '"' {
				inString = true
			}
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 >= len(data) {
				return -1
			}
			if data[i+1] != 'u' {
				i++ // the escaped character
				continue
			}
			r, ok := hex4(data, i+2)
			if !ok {
				return -1 // malformed: the decoder reports it
			}
			switch {
			case r >= 0xD800 && r <= 0xDBFF:
				if i+7 < len(data) && data[i+6] == '\\' && data[i+7] == 'u' {
					if lo, ok := hex4(data, i+8); ok && lo >= 0xDC00 && lo <= 0xDFFF {
						i += 11
						continue
					}
				}
				return i
			case r >= 0xDC00 && r <= 0xDFFF:
				return i
			}
			i += 5
		}
	}
	return -1
}

// hex4 parses the four hex digits at data[i:i+4].
func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// Identify returns the id of a and its canonical JSON. It fails with ErrInvalid when a is not
// a valid artifact.
func Identify(a Artifact) (id string, canonical []byte, err error) {
	return identify(a, 0)
}

// identify is Identify with a size limit (0: none); passing the limit gives ErrTooLarge.
func identify(a Artifact, limit int64) (string, []byte, error) {
	obj, err := a.object()
	if err != nil {
		return "", nil, err
	}
	e := encoder{limit: limit}
	if err := e.value(obj, 0); err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256(e.buf)
	return idPrefix + hex.EncodeToString(sum[:]), e.buf, nil
}

// object is the JSON object whose canonical form identifies a.
func (a Artifact) object() (map[string]any, error) {
	if a.Kind == "" {
		return nil, fmt.Errorf("%w: kind is required", ErrInvalid)
	}
	if a.Content == nil {
		return nil, fmt.Errorf("%w: content is required", ErrInvalid)
	}
	if a.Parent != "" && !ValidID(a.Parent) {
		return nil, fmt.Errorf("%w: parent %q is not an artifact id", ErrInvalid, a.Parent)
	}
	obj := map[string]any{"kind": a.Kind, "content": a.Content}
	if len(a.Tags) > 0 {
		obj["tags"] = a.Tags
	}
	if a.Parent != "" {
		obj["parent"] = a.Parent
	}
	if len(a.Metadata) > 0 {
		obj["metadata"] = a.Metadata
	}
	return obj, nil
}

// encoder appends the canonical form of values to buf.
type encoder struct {
	buf   []byte
	limit int64 // 0: no limit
}

func (e *encoder) check() error {
	if e.limit > 0 && int64(len(e.buf)) > e.limit {
		return fmt.Errorf("%w: canonical form exceeds %d bytes", ErrTooLarge, e.limit)
	}
	return nil
}

func (e *encoder) value(v any, depth int) error {
	switch x := v.(type) {
	case nil:
		e.buf = append(e.buf, "null"...)
	case bool:
		e.buf = strconv.AppendBool(e.buf, x)
	case string:
		if err := e.string(x); err != nil {
			return err
		}
	case json.Number:
		if !validNumber(string(x)) {
			return fmt.Errorf("%w: %q is not a JSON number", ErrInvalid, string(x))
		}
		e.buf = append(e.buf, x...)
	case float64:
		if err := e.float(x); err != nil {
			return err
		}
	case float32:
		if err := e.float(float64(x)); err != nil {
			return err
		}
	case int:
		e.buf = strconv.AppendInt(e.buf, int64(x), 10)
	case int8:
		e.buf = strconv.AppendInt(e.buf, int64(x), 10)
	case int16:
		e.buf = strconv.AppendInt(e.buf, int64(x), 10)
	case int32:
		e.buf = strconv.AppendInt(e.buf, int64(x), 10)
	case int64:
		e.buf = strconv.AppendInt(e.buf, x, 10)
	case uint:
		e.buf = strconv.AppendUint(e.buf, uint64(x), 10)
	case uint8:
		e.buf = strconv.AppendUint(e.buf, uint64(x), 10)
	case uint16:
		e.buf = strconv.AppendUint(e.buf, uint64(x), 10)
	case uint32:
		e.buf = strconv.AppendUint(e.buf, uint64(x), 10)
	case uint64:
		e.buf = strconv.AppendUint(e.buf, x, 10)
	case []any:
		if err := e.enter(depth); err != nil {
			return err
		}
		e.buf = append(e.buf, '[')
		for i, el := range x {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			if err := e.value(el, depth+1); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, ']')
	case []string:
		if err := e.enter(depth); err != nil {
			return err
		}
		e.buf = append(e.buf, '[')
		for i, el := range x {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			if err := e.string(el); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, ']')
	case map[string]any:
		if err := e.enter(depth); err != nil {
			return err
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		e.buf = append(e.buf, '{')
		for i, k := range keys {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			if err := e.string(k); err != nil {
				return err
			}
			e.buf = append(e.buf, ':')
			if err := e.value(x[k], depth+1); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, '}')
	default:
		return fmt.Errorf("%w: unsupported value of type %T", ErrInvalid, v)
	}
	return e.check()
}

func (e *encoder) enter(depth int) error {
	if depth >= MaxDepth {
		return fmt.Errorf("%w: nesting deeper than %d", ErrInvalid, MaxDepth)
	}
	return e.check()
}

func (e *encoder) float(f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%w: %v is not a JSON number", ErrInvalid, f)
	}
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	e.buf = append(e.buf, b...)
	return nil
}

const hexDigits = "0123456789abcdef"

func (e *encoder) string(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: string is not valid UTF-8", ErrInvalid)
	}
	e.buf = append(e.buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		e.buf = append(e.buf, s[start:i]...)
		switch c {
		case '"', '\\':
			e.buf = append(e.buf, '\\', c)
		case '\b':
			e.buf = append(e.buf, '\\', 'b')
		case '\t':
			e.buf = append(e.buf, '\\', 't')
		case '\n':
			e.buf = append(e.buf, '\\', 'n')
		case '\f':
			e.buf = append(e.buf, '\\', 'f')
		case '\r':
			e.buf = append(e.buf, '\\', 'r')
		default:
			e.buf = append(e.buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	e.buf = append(e.buf, s[start:]...)
	e.buf = append(e.buf, '"')
	return nil
}

// validNumber reports whether s matches the JSON number grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func validNumber(s string) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		digits()
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}
