package impl

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
)

// The fast path of request validation. kin-openapi validates a body by decoding it into a
// generic document (maps, slices, json.Number) and walking the schema over it: about half the
// daemon's CPU per admitted task. fastCheck compiles an operation's request schema, once, into a
// checker that walks the raw body bytes without allocating. It is one-sided by construction:
// it answers "valid" only for a body that kin-openapi's validator accepts with the same schema
// and leaves unchanged (no defaults to fill in), and "not sure" for everything else: any schema
// keyword it does not know (the operation is then not compiled at all), a null, a duplicate or
// unknown member, a number that is not a plain integer literal, an escaped string that an enum,
// format or pattern must read, a rule broken. "Not sure" goes to kin-openapi, which validates as
// before and writes the error body, so error answers are byte-identical.

// opCheck is the compiled check of one operation: its header parameters and its JSON body.
type opCheck struct {
	headers []headerCheck
	body    *checker
}

type headerCheck struct {
	name     string // canonical header key
	required bool
	check    *checker // a string checker
}

// valid reports whether r with raw as its body (application/json, read by JSONBody) is valid.
func (o *opCheck) valid(r *http.Request, raw []byte) bool {
	ct := r.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	// echo's binder decodes the body only for exactly this media type.
	if strings.TrimSpace(ct) != "application/json" || len(raw) == 0 {
		return false
	}
	for i := range o.headers {
		h := &o.headers[i]
		vs := r.Header[h.name]
		switch {
		case len(vs) == 0:
			if h.required {
				return false
			}
		case len(vs) > 1:
			return false
		default:
			if !h.check.validString([]byte(vs[0]), utf8.RuneCountInString(vs[0]), false) {
				return false
			}
		}
	}
	s := scanner{b: raw}
	s.space()
	if !s.value(o.body) {
		return false
	}
	s.space()
	return s.i == len(s.b)
}

type ckind uint8

const (
	kObject ckind = iota + 1
	kString
	kInteger
	kBoolean
	kArray
)

// maxProps bounds the members of an object schema the checker handles (their values are
// recorded on the stack).
const maxProps = 32

type prop struct {
	name string
	c    *checker
}

// checker is a compiled schema.
type checker struct {
	kind ckind
	// object
	props    []prop
	required []int // indexes into props
	closed   bool  // additionalProperties: false
	// defaulted: members with a default, which the validator would fill in when left out
	defaulted  []int
	hasDefault bool
	// not: the value must not match it (for an object, over its members; for a string, its value)
	not *pred
	// string
	minLen, maxLen int // maxLen < 0: none
	enum           []string
	pattern        *regexp.Regexp
	format         func([]byte) bool
	// integer
	min, max int64
	// array
	minItems, maxItems int // maxItems < 0: none
	items              *checker
}

// pred is a schema used as a predicate inside `not`/`anyOf`/`allOf`: only presence of members
// (required), string enums of members or of the value, and the combinators.
type pred struct {
	required []int
	props    []predProp
	enum     []string
	anyOf    []*pred
	allOf    []*pred
	not      *pred
}

type predProp struct {
	idx  int
	enum []string
}

// errUnsupported: the schema uses something the fast path does not check; the operation stays
// on kin-openapi alone.
var errUnsupported = errors.New("unsupported by the fast path")

// keys returns the keywords of s as JSON Schema writes them (extensions x-* left out).
func keys(s *openapi3.Schema) (map[string]any, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k := range m {
		if strings.HasPrefix(k, "x-") {
			delete(m, k)
		}
	}
	return m, nil
}

func onlyKeys(m map[string]any, allowed ...string) error {
	for k := range m {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("%w: keyword %q", errUnsupported, k)
		}
	}
	return nil
}

// compileSchema compiles a schema; formats names the string formats it can check, as the
// validator is configured to check them.
func compileSchema(ref *openapi3.SchemaRef, formats map[string]func([]byte) bool) (*checker, error) {
	if ref == nil || ref.Value == nil {
		return nil, fmt.Errorf("%w: unresolved schema", errUnsupported)
	}
	s := ref.Value
	m, err := keys(s)
	if err != nil {
		return nil, err
	}
	if s.Type == nil || len(*s.Type) != 1 {
		return nil, fmt.Errorf("%w: type %v", errUnsupported, s.Type)
	}
	// A default is filled in by the validator where the member is left out: the object that holds
	// it is checked only when the member is there (defaulted).
	common := []string{"type", "description", "title", "example", "examples", "default"}
	c := &checker{maxLen: -1, maxItems: -1, hasDefault: s.Default != nil}
	switch (*s.Type)[0] {
	case openapi3.TypeObject:
		if err := onlyKeys(m, append(common, "properties", "required", "additionalProperties", "not")...); err != nil {
			return nil, err
		}
		c.kind = kObject
		if ap := s.AdditionalProperties; ap.Has != nil && !*ap.Has && ap.Schema == nil {
			c.closed = true
		} else if ap.Has != nil || ap.Schema != nil {
			return nil, fmt.Errorf("%w: additionalProperties", errUnsupported)
		}
		if len(s.Properties) > maxProps {
			return nil, fmt.Errorf("%w: more than %d properties", errUnsupported, maxProps)
		}
		for name, p := range s.Properties {
			pc, err := compileSchema(p, formats)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			c.props = append(c.props, prop{name: name, c: pc})
		}
		for i, p := range c.props {
			if p.c.hasDefault {
				c.defaulted = append(c.defaulted, i)
			}
		}
		for _, r := range s.Required {
			i := c.propIndex(r)
			if i < 0 {
				return nil, fmt.Errorf("%w: required %q is not a property", errUnsupported, r)
			}
			c.required = append(c.required, i)
		}
		if s.Not != nil {
			if c.not, err = c.compilePred(s.Not); err != nil {
				return nil, err
			}
		}
	case openapi3.TypeString:
		if err := onlyKeys(m, append(common, "minLength", "maxLength", "enum", "pattern", "format", "not")...); err != nil {
			return nil, err
		}
		c.kind = kString
		c.minLen = int(s.MinLength)
		if s.MaxLength != nil {
			c.maxLen = int(*s.MaxLength)
		}
		for _, e := range s.Enum {
			str, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: enum value %v", errUnsupported, e)
			}
			c.enum = append(c.enum, str)
		}
		if s.Pattern != "" {
			// As kin-openapi compiles it (openapi3.intoGoRegexp: \uXXXX as \x{XXXX}).
			if strings.Contains(s.Pattern, `\u`) {
				return nil, fmt.Errorf("%w: pattern with \\u", errUnsupported)
			}
			if c.pattern, err = regexp.Compile(s.Pattern); err != nil {
				return nil, err
			}
		}
		if s.Format != "" {
			if c.format = formats[s.Format]; c.format == nil {
				return nil, fmt.Errorf("%w: format %q", errUnsupported, s.Format)
			}
		}
		if s.Not != nil {
			if c.not, err = c.compilePred(s.Not); err != nil {
				return nil, err
			}
		}
	case openapi3.TypeInteger:
		if err := onlyKeys(m, append(common, "format", "minimum", "maximum")...); err != nil {
			return nil, err
		}
		c.kind = kInteger
		c.min, c.max = -(1 << 53), 1<<53
		switch s.Format {
		case "int32":
			c.min, c.max = math.MinInt32, math.MaxInt32
		case "int64", "":
		default:
			return nil, fmt.Errorf("%w: integer format %q", errUnsupported, s.Format)
		}
		if s.Min != nil {
			if *s.Min != math.Trunc(*s.Min) {
				return nil, fmt.Errorf("%w: minimum %v", errUnsupported, *s.Min)
			}
			c.min = max(c.min, int64(*s.Min))
		}
		if s.Max != nil {
			if *s.Max != math.Trunc(*s.Max) {
				return nil, fmt.Errorf("%w: maximum %v", errUnsupported, *s.Max)
			}
			c.max = min(c.max, int64(*s.Max))
		}
	case openapi3.TypeBoolean:
		if err := onlyKeys(m, common...); err != nil {
			return nil, err
		}
		c.kind = kBoolean
	case openapi3.TypeArray:
		if err := onlyKeys(m, append(common, "items", "minItems", "maxItems")...); err != nil {
			return nil, err
		}
		c.kind = kArray
		c.minItems = int(s.MinItems)
		if s.MaxItems != nil {
			c.maxItems = int(*s.MaxItems)
		}
		if c.items, err = compileSchema(s.Items, formats); err != nil {
			return nil, fmt.Errorf("items: %w", err)
		}
	default:
		return nil, fmt.Errorf("%w: type %v", errUnsupported, *s.Type)
	}
	return c, nil
}

func (c *checker) propIndex(name string) int {
	for i := range c.props {
		if c.props[i].name == name {
			return i
		}
	}
	return -1
}

// compilePred compiles a predicate schema within c (an object: members by index; a string: enum).
func (c *checker) compilePred(ref *openapi3.SchemaRef) (*pred, error) {
	if ref == nil || ref.Value == nil {
		return nil, fmt.Errorf("%w: unresolved schema", errUnsupported)
	}
	s := ref.Value
	m, err := keys(s)
	if err != nil {
		return nil, err
	}
	p := &pred{}
	if c.kind == kString {
		if err := onlyKeys(m, "description", "enum"); err != nil {
			return nil, err
		}
		for _, e := range s.Enum {
			str, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: enum value %v", errUnsupported, e)
			}
			p.enum = append(p.enum, str)
		}
		if p.enum == nil {
			return nil, fmt.Errorf("%w: a string's not without enum", errUnsupported)
		}
		return p, nil
	}
	if err := onlyKeys(m, "description", "required", "properties", "anyOf", "allOf", "not"); err != nil {
		return nil, err
	}
	for _, r := range s.Required {
		i := c.propIndex(r)
		if i < 0 {
			return nil, fmt.Errorf("%w: required %q is not a property", errUnsupported, r)
		}
		p.required = append(p.required, i)
	}
	for name, ps := range s.Properties {
		i := c.propIndex(name)
		if i < 0 || ps == nil || ps.Value == nil || c.props[i].c.kind != kString {
			return nil, fmt.Errorf("%w: predicate on %q", errUnsupported, name)
		}
		pm, err := keys(ps.Value)
		if err != nil {
			return nil, err
		}
		if err := onlyKeys(pm, "description", "enum"); err != nil {
			return nil, err
		}
		pp := predProp{idx: i}
		for _, e := range ps.Value.Enum {
			str, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: enum value %v", errUnsupported, e)
			}
			pp.enum = append(pp.enum, str)
		}
		if pp.enum == nil {
			return nil, fmt.Errorf("%w: predicate on %q without enum", errUnsupported, name)
		}
		p.props = append(p.props, pp)
	}
	for _, sub := range s.AnyOf {
		q, err := c.compilePred(sub)
		if err != nil {
			return nil, err
		}
		p.anyOf = append(p.anyOf, q)
	}
	for _, sub := range s.AllOf {
		q, err := c.compilePred(sub)
		if err != nil {
			return nil, err
		}
		p.allOf = append(p.allOf, q)
	}
	if s.Not != nil {
		if p.not, err = c.compilePred(s.Not); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// member is what an object's member held: its raw string content (no escapes) when it is a
// string, for predicates.
type member struct {
	present bool
	str     []byte
	isStr   bool // a string without escapes
}

// match evaluates p over an object's members (or, with value set, over a string's value).
// ok is false when it cannot tell (a member a predicate reads is not a plain string).
func (p *pred) match(ms *[maxProps]member, value []byte, isValue bool) (matched, ok bool) {
	if isValue {
		return inEnum(p.enum, value), true
	}
	for _, i := range p.required {
		if !ms[i].present {
			return false, true
		}
	}
	for _, pp := range p.props {
		m := &ms[pp.idx]
		if !m.present {
			continue
		}
		if !m.isStr {
			return false, false
		}
		if !inEnum(pp.enum, m.str) {
			return false, true
		}
	}
	for _, q := range p.allOf {
		mt, ok := q.match(ms, nil, false)
		if !ok {
			return false, false
		}
		if !mt {
			return false, true
		}
	}
	if len(p.anyOf) > 0 {
		anyMatch := false
		for _, q := range p.anyOf {
			mt, ok := q.match(ms, nil, false)
			if !ok {
				return false, false
			}
			anyMatch = anyMatch || mt
		}
		if !anyMatch {
			return false, true
		}
	}
	if p.not != nil {
		mt, ok := p.not.match(ms, nil, false)
		if !ok {
			return false, false
		}
		if mt {
			return false, true
		}
	}
	return true, true
}

func inEnum(enum []string, v []byte) bool {
	for _, e := range enum {
		if e == string(v) {
			return true
		}
	}
	return false
}

// validString checks a string value: s its content (without escapes unless escaped), n its
// length in code points.
func (c *checker) validString(s []byte, n int, escaped bool) bool {
	if n < c.minLen || (c.maxLen >= 0 && n > c.maxLen) {
		return false
	}
	if escaped && (c.enum != nil || c.pattern != nil || c.format != nil || c.not != nil) {
		return false // the checks below read the value: leave it to the validator
	}
	if c.enum != nil && !inEnum(c.enum, s) {
		return false
	}
	if c.pattern != nil && !c.pattern.Match(s) {
		return false
	}
	if c.format != nil && !c.format(s) {
		return false
	}
	if c.not != nil {
		if m, _ := c.not.match(nil, s, true); m {
			return false
		}
	}
	return true
}

// scanner walks one JSON value in b from i.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value checks the value at s.i against c and moves past it.
func (s *scanner) value(c *checker) bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c.kind {
	case kObject:
		return s.object(c)
	case kString:
		raw, n, escaped, ok := s.str()
		return ok && c.validString(raw, n, escaped)
	case kInteger:
		v, ok := s.integer()
		return ok && v >= c.min && v <= c.max
	case kBoolean:
		switch {
		case bytes.HasPrefix(s.b[s.i:], []byte("true")):
			s.i += 4
		case bytes.HasPrefix(s.b[s.i:], []byte("false")):
			s.i += 5
		default:
			return false
		}
		return true
	case kArray:
		return s.array(c)
	}
	return false
}

func (s *scanner) object(c *checker) bool {
	if s.b[s.i] != '{' {
		return false
	}
	s.i++
	var ms [maxProps]member
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
	} else {
		for {
			s.space()
			key, _, escaped, ok := s.str()
			if !ok || escaped {
				return false
			}
			idx := -1
			for j := range c.props {
				if c.props[j].name == string(key) {
					idx = j
					break
				}
			}
			if idx < 0 || ms[idx].present { // unknown (or, open objects: not checked here), or a duplicate
				return false
			}
			s.space()
			if s.i >= len(s.b) || s.b[s.i] != ':' {
				return false
			}
			s.i++
			s.space()
			start := s.i
			if !s.value(c.props[idx].c) {
				return false
			}
			m := &ms[idx]
			m.present = true
			if c.props[idx].c.kind == kString {
				raw := s.b[start+1 : s.i-1]
				m.str, m.isStr = raw, !hasBackslash(raw)
			}
			s.space()
			if s.i >= len(s.b) {
				return false
			}
			if s.b[s.i] == ',' {
				s.i++
				continue
			}
			if s.b[s.i] != '}' {
				return false
			}
			s.i++
			break
		}
	}
	for _, r := range c.required {
		if !ms[r].present {
			return false
		}
	}
	for _, d := range c.defaulted {
		if !ms[d].present {
			return false // the validator would fill it in: leave the body to it
		}
	}
	if c.not != nil {
		if m, ok := c.not.match(&ms, nil, false); !ok || m {
			return false
		}
	}
	return true
}

func hasBackslash(b []byte) bool {
	for _, c := range b {
		if c == '\\' {
			return true
		}
	}
	return false
}

func (s *scanner) array(c *checker) bool {
	if s.b[s.i] != '[' {
		return false
	}
	s.i++
	n := 0
	s.space()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
	} else {
		for {
			s.space()
			if !s.value(c.items) {
				return false
			}
			n++
			s.space()
			if s.i >= len(s.b) {
				return false
			}
			if s.b[s.i] == ',' {
				s.i++
				continue
			}
			if s.b[s.i] != ']' {
				return false
			}
			s.i++
			break
		}
	}
	return n >= c.minItems && (c.maxItems < 0 || n <= c.maxItems)
}

// str reads a JSON string: its raw content, its length in code points once decoded (as
// encoding/json decodes it: an invalid UTF-8 byte or a lone surrogate escape is one U+FFFD),
// and whether it has escapes.
func (s *scanner) str() (raw []byte, n int, escaped, ok bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, 0, false, false
	}
	s.i++
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw = s.b[start:s.i]
			s.i++
			return raw, n, escaped, true
		case c < 0x20:
			return nil, 0, false, false
		case c == '\\':
			escaped = true
			if s.i+1 >= len(s.b) {
				return nil, 0, false, false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				r, ok := hex4(s.b, s.i+2)
				if !ok {
					return nil, 0, false, false
				}
				s.i += 6
				if utf16.IsSurrogate(r) {
					// A valid pair is one code point; anything else leaves r as one U+FFFD and
					// the next escape to be read on its own.
					if r2, ok := hex4(s.b, s.i+2); ok && s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' &&
						utf16.DecodeRune(r, r2) != utf8.RuneError {
						s.i += 6
					}
				}
			default:
				return nil, 0, false, false
			}
			n++
		case c < utf8.RuneSelf:
			s.i++
			n++
		default:
			_, size := utf8.DecodeRune(s.b[s.i:])
			s.i += size
			n++
		}
	}
	return nil, 0, false, false
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}

// integer reads a plain JSON integer literal (no fraction, no exponent) of at most 15 digits.
func (s *scanner) integer() (int64, bool) {
	neg := false
	if s.i < len(s.b) && s.b[s.i] == '-' {
		neg = true
		s.i++
	}
	start := s.i
	var v int64
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		v = v*10 + int64(s.b[s.i]-'0')
		s.i++
	}
	digits := s.i - start
	if digits == 0 || digits > 15 || (digits > 1 && s.b[start] == '0') {
		return 0, false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	if neg {
		v = -v
	}
	return v, true
}

// uuidRFC9562 matches exactly what openapi3.FormatOfStringForUUIDOfRFC9562 matches (the uuid
// format the validator checks): a UUID of versions 1 to 8 and the RFC 4122 variant, the nil UUID
// or the max UUID, hex digits in either case. A regular expression took 10% of an admission.
func uuidRFC9562(b []byte) bool {
	if len(b) != 36 {
		return false
	}
	allF, allZero := true, true
	for i, c := range b {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
		allF = allF && (c == 'f' || c == 'F')
		allZero = allZero && c == '0'
	}
	if '1' <= b[14] && b[14] <= '8' {
		switch b[19] {
		case '8', '9', 'a', 'b', 'A', 'B':
			return true
		}
	}
	return allF || allZero
}
