// Package textclip cuts texts to a length limit without splitting a UTF-8 character: the
// contract's maxLength fields (error messages) take at most that many bytes, which is never
// more than that many characters, and a cut inside a multi-byte character would leave an
// invalid sequence that JSON encoders replace with U+FFFD.
package textclip

import "unicode/utf8"

// Clip returns s cut to at most n bytes, at a character boundary (s itself when it fits).
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	// s[n] begins the first character left out, or is inside it: that character begins at most
	// UTFMax-1 bytes before. (Continuation bytes with no start are invalid text, cut as bytes.)
	for i := n; i >= 0 && i > n-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i]
		}
	}
	return s[:n]
}
