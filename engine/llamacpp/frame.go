package llamacpp

import (
	"errors"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// frame is one decoded event of llama-server's /completion stream, reduced to the fields the
// adapter uses. Byte slices alias the decoded input or the decoder's scratch buffer and stay
// valid until the decoder's next call. Integer fields are -1 when the key is absent or null.
//
// A partial frame looks like
//
//	{"index":0,"content":" The","tokens":[449],"stop":false,"id_slot":-1,"tokens_predicted":1,"tokens_evaluated":6}
//
// and the final one like
//
//	{"index":0,"content":"","tokens":[],"id_slot":0,"stop":true,...,"tokens_predicted":12,
//	 "tokens_evaluated":6,...,"stop_type":"limit","stopping_word":"","tokens_cached":17,
//	 "timings":{"cache_n":0,"prompt_n":6,...,"predicted_n":12,...}}
//
// An engine failure after the response started arrives as {"error":{"code":500,"message":...,
// "type":...}} (newer servers) or as the SSE field "error: {...}" (older ones).
type frame struct {
	content         []byte
	nTokens         int // len of the "tokens" array (0 when absent)
	stop            bool
	stopType        []byte
	tokensPredicted int
	tokensEvaluated int
	idSlot          int // the slot that served the request (-1 in token frames, absent, or null)

	hasTimings bool
	promptN    int // timings.prompt_n: prompt tokens evaluated for this request
	predictedN int // timings.predicted_n
	cacheN     int // timings.cache_n: prompt tokens reused from the slot's KV cache

	hasError   bool
	errCode    int
	errMessage []byte
	errType    []byte
}

func (f *frame) reset() {
	*f = frame{tokensPredicted: -1, tokensEvaluated: -1, idSlot: -1, promptN: -1, predictedN: -1, cacheN: -1, errCode: -1}
}

// maxDepth mirrors encoding/json's nesting limit so the decoder accepts exactly the documents
// encoding/json accepts.
const maxDepth = 10000

// frameDecoder decodes frames with a hand-written JSON scanner: it validates the whole
// document (RFC 8259, as encoding/json does), extracts the few fields of frame and skips the
// rest without allocating. Strings are unescaped exactly like encoding/json (invalid UTF-8 and
// lone surrogates become U+FFFD). The zero value is ready to use; it is not safe for
// concurrent use. FuzzDecodeFrame checks it against encoding/json.
type frameDecoder struct {
	scratch []byte // unescaped strings; reused across calls
}

// errSyntax is wrapped by every malformed-document error.
var errSyntax = errors.New("malformed JSON")

type scanner struct {
	data []byte
	pos  int
	d    *frameDecoder
}

func (s *scanner) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", errSyntax, what, s.pos)
}

// decode parses data (one JSON object) into f.
func (d *frameDecoder) decode(data []byte, f *frame) error {
	f.reset()
	d.scratch = d.scratch[:0]
	s := scanner{data: data, d: d}
	err := s.object(1, func(key []byte) error {
		switch string(key) {
		case "content":
			v, null, err := s.stringOrNull()
			if err != nil {
				return err
			}
			if !null {
				f.content = v
			} else {
				f.content = nil
			}
		case "tokens":
			n, err := s.countArray(2)
			if err != nil {
				return err
			}
			f.nTokens = n
		case "stop":
			v, err := s.boolOrNull()
			if err != nil {
				return err
			}
			f.stop = v
		case "stop_type":
			v, null, err := s.stringOrNull()
			if err != nil {
				return err
			}
			if null {
				v = nil
			}
			f.stopType = v
		case "tokens_predicted":
			return s.intField(&f.tokensPredicted)
		case "tokens_evaluated":
			return s.intField(&f.tokensEvaluated)
		case "id_slot":
			return s.intField(&f.idSlot)
		case "timings":
			if s.null() {
				f.hasTimings, f.promptN, f.predictedN, f.cacheN = false, -1, -1, -1
				return nil
			}
			f.hasTimings, f.promptN, f.predictedN, f.cacheN = true, -1, -1, -1
			return s.object(2, func(key []byte) error {
				switch string(key) {
				case "prompt_n":
					return s.intField(&f.promptN)
				case "predicted_n":
					return s.intField(&f.predictedN)
				case "cache_n":
					return s.intField(&f.cacheN)
				}
				return s.skip(3)
			})
		case "error":
			if s.null() {
				f.hasError, f.errCode, f.errMessage, f.errType = false, -1, nil, nil
				return nil
			}
			f.hasError, f.errCode, f.errMessage, f.errType = true, -1, nil, nil
			return s.errorFields(f, 2)
		default:
			return s.skip(2)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.ws()
	if s.pos != len(s.data) {
		return s.fail("data after the object")
	}
	return nil
}

// decodeError parses the payload of an SSE "error:" field: either {"error":{...}} or the
// error object itself ({"code":..,"message":..,"type":..}).
func (d *frameDecoder) decodeError(data []byte, f *frame) error {
	f.reset()
	d.scratch = d.scratch[:0]
	s := scanner{data: data, d: d}
	f.hasError = true
	var nested frame
	nested.reset()
	err := s.object(1, func(key []byte) error {
		switch string(key) {
		case "error":
			if s.null() {
				return nil
			}
			nested.hasError = true
			return s.errorFields(&nested, 2)
		case "code":
			return s.intField(&f.errCode)
		case "message":
			v, null, err := s.stringOrNull()
			if !null {
				f.errMessage = v
			}
			return err
		case "type":
			v, null, err := s.stringOrNull()
			if !null {
				f.errType = v
			}
			return err
		}
		return s.skip(2)
	})
	if err != nil {
		return err
	}
	s.ws()
	if s.pos != len(s.data) {
		return s.fail("data after the object")
	}
	if nested.hasError {
		f.errCode, f.errMessage, f.errType = nested.errCode, nested.errMessage, nested.errType
	}
	return nil
}

func (s *scanner) errorFields(f *frame, depth int) error {
	return s.object(depth, func(key []byte) error {
		switch string(key) {
		case "code":
			return s.intField(&f.errCode)
		case "message":
			v, null, err := s.stringOrNull()
			if null {
				v = nil
			}
			f.errMessage = v
			return err
		case "type":
			v, null, err := s.stringOrNull()
			if null {
				v = nil
			}
			f.errType = v
			return err
		}
		return s.skip(depth + 1)
	})
}

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// object parses an object at nesting depth depth, calling member for each key with the
// scanner positioned at the value; member must consume the value.
func (s *scanner) object(depth int, member func(key []byte) error) error {
	if depth > maxDepth {
		return s.fail("nesting too deep")
	}
	s.ws()
	if s.pos >= len(s.data) || s.data[s.pos] != '{' {
		return s.fail("expected object")
	}
	s.pos++
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return nil
	}
	for {
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.fail("expected key")
		}
		key, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.fail("expected ':'")
		}
		s.pos++
		s.ws()
		if err := member(key); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.data) {
			return s.fail("unterminated object")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.fail("expected ',' or '}'")
		}
	}
}

// null consumes a null literal if one is next.
func (s *scanner) null() bool {
	s.ws()
	if len(s.data)-s.pos >= 4 && string(s.data[s.pos:s.pos+4]) == "null" {
		s.pos += 4
		return true
	}
	return false
}

func (s *scanner) stringOrNull() (v []byte, null bool, err error) {
	if s.null() {
		return nil, true, nil
	}
	if s.pos >= len(s.data) || s.data[s.pos] != '"' {
		return nil, false, s.fail("expected string")
	}
	v, err = s.str()
	return v, false, err
}

func (s *scanner) boolOrNull() (bool, error) {
	if s.null() {
		return false, nil
	}
	switch {
	case len(s.data)-s.pos >= 4 && string(s.data[s.pos:s.pos+4]) == "true":
		s.pos += 4
		return true, nil
	case len(s.data)-s.pos >= 5 && string(s.data[s.pos:s.pos+5]) == "false":
		s.pos += 5
		return false, nil
	}
	return false, s.fail("expected boolean")
}

// intField parses an integer (no fraction or exponent, fits int64) or null (-1) into dst.
func (s *scanner) intField(dst *int) error {
	if s.null() {
		*dst = -1
		return nil
	}
	start := s.pos
	isInt, err := s.number()
	if err != nil {
		return err
	}
	if !isInt {
		return fmt.Errorf("%w: number %q is not an integer", errSyntax, s.data[start:s.pos])
	}
	n, err := strconv.ParseInt(string(s.data[start:s.pos]), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %w", errSyntax, err)
	}
	*dst = int(n)
	return nil
}

// countArray parses an array (or null) and returns its length.
func (s *scanner) countArray(depth int) (int, error) {
	if s.null() {
		return 0, nil
	}
	if s.pos >= len(s.data) || s.data[s.pos] != '[' {
		return 0, s.fail("expected array")
	}
	return s.array(depth)
}

// array parses an array whose '[' is next, at nesting depth depth, and returns its length.
func (s *scanner) array(depth int) (int, error) {
	if depth > maxDepth {
		return 0, s.fail("nesting too deep")
	}
	s.pos++ // '['
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return 0, nil
	}
	n := 0
	for {
		if err := s.skip(depth + 1); err != nil {
			return 0, err
		}
		n++
		s.ws()
		if s.pos >= len(s.data) {
			return 0, s.fail("unterminated array")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return n, nil
		default:
			return 0, s.fail("expected ',' or ']'")
		}
	}
}

// skip validates and skips one value; depth is the nesting depth a container value would have.
func (s *scanner) skip(depth int) error {
	s.ws()
	if s.pos >= len(s.data) {
		return s.fail("expected value")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(depth, func([]byte) error { return s.skip(depth + 1) })
	case c == '[':
		_, err := s.array(depth)
		return err
	case c == '"':
		return s.skipString()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := s.number()
		return err
	}
	return s.fail("unexpected character")
}

func (s *scanner) literal(lit string) error {
	if len(s.data)-s.pos >= len(lit) && string(s.data[s.pos:s.pos+len(lit)]) == lit {
		s.pos += len(lit)
		return nil
	}
	return s.fail("bad literal")
}

// number scans a JSON number and reports whether it is an integer (no fraction or exponent).
func (s *scanner) number() (isInt bool, err error) {
	d, p := s.data, s.pos
	if p < len(d) && d[p] == '-' {
		p++
	}
	switch {
	case p < len(d) && d[p] == '0':
		p++
	case p < len(d) && d[p] >= '1' && d[p] <= '9':
		for p < len(d) && d[p] >= '0' && d[p] <= '9' {
			p++
		}
	default:
		s.pos = p
		return false, s.fail("bad number")
	}
	isInt = true
	if p < len(d) && d[p] == '.' {
		isInt = false
		p++
		if p >= len(d) || d[p] < '0' || d[p] > '9' {
			s.pos = p
			return false, s.fail("bad fraction")
		}
		for p < len(d) && d[p] >= '0' && d[p] <= '9' {
			p++
		}
	}
	if p < len(d) && (d[p] == 'e' || d[p] == 'E') {
		isInt = false
		p++
		if p < len(d) && (d[p] == '+' || d[p] == '-') {
			p++
		}
		if p >= len(d) || d[p] < '0' || d[p] > '9' {
			s.pos = p
			return false, s.fail("bad exponent")
		}
		for p < len(d) && d[p] >= '0' && d[p] <= '9' {
			p++
		}
	}
	s.pos = p
	return isInt, nil
}

// skipString validates and skips a string whose '"' is next. Invalid UTF-8 is allowed (as in
// encoding/json); control characters and bad escapes are not.
func (s *scanner) skipString() error {
	d := s.data
	p := s.pos + 1
	for p < len(d) {
		c := d[p]
		switch {
		case c == '"':
			s.pos = p + 1
			return nil
		case c == '\\':
			n, ok := escapeLen(d[p:])
			if !ok {
				s.pos = p
				return s.fail("bad escape")
			}
			p += n
		case c < 0x20:
			s.pos = p
			return s.fail("control character in string")
		default:
			p++
		}
	}
	s.pos = p
	return s.fail("unterminated string")
}

// escapeLen returns the length of the escape sequence at the start of b (b[0] == '\\').
func escapeLen(b []byte) (int, bool) {
	if len(b) < 2 {
		return 0, false
	}
	switch b[1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2, true
	case 'u':
		if len(b) < 6 {
			return 0, false
		}
		for _, h := range b[2:6] {
			if hexVal(h) < 0 {
				return 0, false
			}
		}
		return 6, true
	}
	return 0, false
}

func hexVal(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// getu4 decodes \uXXXX at the start of b, or returns -1.
func getu4(b []byte) rune {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range b[2:6] {
		v := hexVal(c)
		if v < 0 {
			return -1
		}
		r = r<<4 | v
	}
	return r
}

// str parses a string whose '"' is next and returns its unescaped bytes: a sub-slice of the
// input when no unescaping is needed, else a slice of the decoder's scratch buffer.
func (s *scanner) str() ([]byte, error) {
	d := s.data
	start := s.pos + 1
	p := start
	// Fast path: plain ASCII or valid UTF-8 without escapes.
	for p < len(d) {
		c := d[p]
		if c == '"' {
			s.pos = p + 1
			return d[start:p], nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		if c < utf8.RuneSelf {
			p++
			continue
		}
		r, size := utf8.DecodeRune(d[p:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		p += size
	}
	// Slow path: unescape into scratch, exactly as encoding/json does.
	buf := s.d.scratch
	off := len(buf)
	buf = append(buf, d[start:p]...)
	for {
		if p >= len(d) {
			s.pos = p
			return nil, s.fail("unterminated string")
		}
		c := d[p]
		switch {
		case c == '"':
			s.pos = p + 1
			s.d.scratch = buf
			return buf[off:len(buf):len(buf)], nil
		case c < 0x20:
			s.pos = p
			return nil, s.fail("control character in string")
		case c == '\\':
			n, ok := escapeLen(d[p:])
			if !ok {
				s.pos = p
				return nil, s.fail("bad escape")
			}
			switch d[p+1] {
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r := getu4(d[p:])
				if utf16.IsSurrogate(r) {
					if dec := utf16.DecodeRune(r, getu4(d[p+6:])); dec != unicode.ReplacementChar {
						buf = utf8.AppendRune(buf, dec)
						p += 12
						continue
					}
					r = unicode.ReplacementChar
				}
				buf = utf8.AppendRune(buf, r)
			default: // '"', '\\', '/'
				buf = append(buf, d[p+1])
			}
			p += n
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			p++
		default:
			r, size := utf8.DecodeRune(d[p:])
			buf = utf8.AppendRune(buf, r) // invalid bytes become U+FFFD, one per byte
			p += size
		}
	}
}
