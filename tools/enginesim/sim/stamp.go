package sim

import "time"

// StampDigits is the number of decimal digits of the Unix-nanosecond time in a token's text.
const StampDigits = 19

// StampLen is the length in bytes of one token's text: " t" and StampDigits digits.
const StampLen = 2 + StampDigits

// AppendStamp appends the text of a token emitted at t (" t" and t.UnixNano() as 19
// zero-padded digits) to dst and returns the extended slice. Times before the Unix epoch are
// written as 0.
func AppendStamp(dst []byte, t time.Time) []byte {
	return appendStampNanos(dst, t.UnixNano())
}

func appendStampNanos(dst []byte, ns int64) []byte {
	if ns < 0 {
		ns = 0
	}
	var b [StampLen]byte
	b[0] = ' '
	b[1] = 't'
	u := uint64(ns)
	for i := StampLen - 1; i >= 2; i-- {
		b[i] = byte('0' + u%10)
		u /= 10
	}
	return append(dst, b[:]...)
}

// ParseStamp parses the text of one token produced by the simulator: an optional leading space,
// 't', and exactly 19 decimal digits of Unix nanoseconds. It reports false for anything else,
// including values that overflow int64.
func ParseStamp(text string) (time.Time, bool) {
	if len(text) == StampLen && text[0] == ' ' {
		text = text[1:]
	}
	if len(text) != StampLen-1 || text[0] != 't' {
		return time.Time{}, false
	}
	ns, ok := parseDigits(text[1:])
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// parseDigits parses exactly StampDigits decimal digits into a non-negative int64.
func parseDigits(s string) (int64, bool) {
	if len(s) != StampDigits {
		return 0, false
	}
	var u uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		u = u*10 + uint64(c-'0') // 19 digits never overflow uint64
	}
	if u > 1<<63-1 {
		return 0, false
	}
	return int64(u), true
}

// EachStamp calls fn with the emission time of every token stamp in text, in order, and returns
// how many it found. A stamp is 't' followed by exactly 19 digits that is not preceded by a
// letter or digit and not followed by a digit; this finds every token of a concatenation of
// simulator tokens (such as a non-stream response, or a chunk in which a proxy coalesced
// several tokens). fn may be nil to only count.
func EachStamp(text string, fn func(time.Time)) int {
	n := 0
	for i := 0; i+StampLen-1 <= len(text); i++ {
		if text[i] != 't' {
			continue
		}
		if i > 0 && isAlnum(text[i-1]) {
			continue
		}
		end := i + StampLen - 1
		if end < len(text) && isDigit(text[end]) {
			continue
		}
		ns, ok := parseDigits(text[i+1 : end])
		if !ok {
			continue
		}
		n++
		if fn != nil {
			fn(time.Unix(0, ns))
		}
		i = end - 1
	}
	return n
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isAlnum(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
}
