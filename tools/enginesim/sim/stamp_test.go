package sim

import (
	"strings"
	"testing"
	"time"
)

func TestAppendStampParseStampRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{"epoch", time.Unix(0, 0), " t0000000000000000000"},
		{"one ns", time.Unix(0, 1), " t0000000000000000001"},
		{"recent", time.Unix(0, 1732800000123456789), " t1732800000123456789"},
		{"max int64", time.Unix(0, 1<<63-1), " t9223372036854775807"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(AppendStamp(nil, tt.at))
			if got != tt.want {
				t.Fatalf("AppendStamp = %q, want %q", got, tt.want)
			}
			if len(got) != StampLen {
				t.Fatalf("len = %d, want %d", len(got), StampLen)
			}
			back, ok := ParseStamp(got)
			if !ok || !back.Equal(tt.at) {
				t.Fatalf("ParseStamp(%q) = %v, %v; want %v", got, back, ok, tt.at)
			}
		})
	}
}

func TestAppendStampBeforeEpochIsZero(t *testing.T) {
	if got := string(AppendStamp(nil, time.Unix(-5, 0))); got != " t0000000000000000000" {
		t.Fatalf("got %q", got)
	}
}

func TestParseStamp(t *testing.T) {
	tests := []struct {
		in     string
		wantNS int64
		ok     bool
	}{
		{" t1732800000123456789", 1732800000123456789, true},
		{"t1732800000123456789", 1732800000123456789, true},
		{"  t1732800000123456789", 0, false},
		{" t173280000012345678", 0, false},
		{" t17328000001234567890", 0, false},
		{" T1732800000123456789", 0, false},
		{" t17328000001234567x9", 0, false},
		{" t9223372036854775808", 0, false}, // overflows int64
		{" t9999999999999999999", 0, false},
		{"x1732800000123456789", 0, false},
		{"", 0, false},
		{" The", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ParseStamp(tt.in)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if ok && got.UnixNano() != tt.wantNS {
				t.Fatalf("ns = %d, want %d", got.UnixNano(), tt.wantNS)
			}
		})
	}
}

func TestEachStamp(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []int64
	}{
		{"empty", "", nil},
		{"one", " t1732800000123456789", []int64{1732800000123456789}},
		{"no space", "t0000000000000000042", []int64{42}},
		{"concatenated", " t0000000000000000001 t0000000000000000002 t0000000000000000003", []int64{1, 2, 3}},
		{"glued", " t0000000000000000001t0000000000000000002", []int64{1}},
		{"too long", " t00000000000000000012", nil},
		{"word before", " at0000000000000000001", nil},
		{"mixed text", "hello t0000000000000000007 world", []int64{7}},
		{"overflow skipped", " t9999999999999999999 t0000000000000000005", []int64{5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int64
			n := EachStamp(tt.in, func(at time.Time) { got = append(got, at.UnixNano()) })
			if n != len(got) || n != len(tt.want) {
				t.Fatalf("n = %d, got %v, want %v", n, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
			if EachStamp(tt.in, nil) != n {
				t.Fatal("count with nil fn differs")
			}
		})
	}
}

func FuzzParseStamp(f *testing.F) {
	f.Add(" t1732800000123456789")
	f.Add("t0000000000000000000")
	f.Add(" t9223372036854775808")
	f.Add(" The")
	f.Fuzz(func(t *testing.T, s string) {
		at, ok := ParseStamp(s)
		if !ok {
			return
		}
		canon := string(AppendStamp(nil, at))
		if s != canon && " "+s != canon {
			t.Fatalf("ParseStamp(%q) accepted a non-canonical form; canonical is %q", s, canon)
		}
		if n := EachStamp(s, nil); n != 1 {
			t.Fatalf("EachStamp(%q) = %d, want 1 for a parsable stamp", s, n)
		}
	})
}

func FuzzEachStamp(f *testing.F) {
	f.Add(" t0000000000000000001 t0000000000000000002", int64(3))
	f.Add("hello t0000000000000000007 world", int64(0))
	f.Fuzz(func(t *testing.T, s string, ns int64) {
		n := EachStamp(s, func(at time.Time) {
			if at.UnixNano() < 0 {
				t.Fatalf("negative stamp in %q", s)
			}
		})
		if n > len(s)/(StampLen-1) {
			t.Fatalf("EachStamp(%q) = %d, more than fit", s, n)
		}
		// Appending a well-formed token after a space always adds exactly one stamp.
		at := time.Unix(0, max(ns, 0))
		joined := strings.TrimRight(s, "0123456789") + string(AppendStamp(nil, at))
		var last time.Time
		m := EachStamp(joined, func(got time.Time) { last = got })
		if m < 1 || !last.Equal(at) {
			t.Fatalf("EachStamp(%q) = %d, last %v; want last %v", joined, m, last, at)
		}
	})
}
