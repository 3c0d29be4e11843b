package journal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"slices"
)

// Record is one decoded journal record. Its byte slices alias the buffer it was decoded from.
type Record struct {
	Kind  uint8
	Task  string
	Name  string
	Data  []byte
	Extra []byte
}

// KindRetire is the journal's own tombstone kind; callers use kinds below kindPacked.
const KindRetire uint8 = 0xff

// kindPacked marks a record whose task id is a UUID in its canonical text form (36 lower-case
// characters), written as its 16 bytes: payload kindPacked | kind | 16 bytes | name | data |
// extra. Task ids are UUIDs, and a token's record is about 90 bytes, so this takes a fifth
// off the journal's writes and its compactions' reads. Records written before it (the id as
// text) are read the same.
const kindPacked uint8 = 0xfe

// headerSize is the frame header: payload length and CRC.
const headerSize = 8

// MaxRecordBytes bounds one record's payload; a larger length is corruption.
const MaxRecordBytes = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decoding failures. Both end a scan: what follows is not trusted.
var (
	// ErrTorn is a record cut short: the end of the input arrived inside it.
	ErrTorn = errors.New("journal: torn record")
	// ErrCorrupt is a record whose length, CRC or fields are invalid.
	ErrCorrupt = errors.New("journal: corrupt record")
)

// uuidDigits are the offsets in a UUID's text of the first digit of each of its 16 bytes.
var uuidDigits = [16]int{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

// hexValue is the value of each lower-case hex digit, 0xff for every other byte.
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

// appendUUID appends the 16 bytes of s when s is a UUID in its canonical text form (ok);
// otherwise it returns b unchanged and false. One pass checks and converts, in place.
func appendUUID(b []byte, s string) (_ []byte, ok bool) {
	if len(s) != 36 { // not a UUID: b is not grown
		return b, false
	}
	b = slices.Grow(b, 16)
	if !decodeUUID((*[16]byte)(b[len(b):len(b)+16]), s) {
		return b, false
	}
	return b[:len(b)+16], true
}

// decodeUUID writes the 16 bytes of s into id and reports whether s is a UUID in its canonical
// text form (if not, id holds garbage).
func decodeUUID[S string | []byte](id *[16]byte, s S) bool {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	var bad byte
	for k, i := range uuidDigits {
		hi, lo := hexValue[s[i]], hexValue[s[i+1]]
		bad |= hi | lo
		id[k] = hi<<4 | lo
	}
	return bad <= 0xf
}

// formatUUID writes the canonical text of the 16 bytes id into dst.
func formatUUID(dst *[36]byte, id []byte) []byte {
	const digits = "0123456789abcdef"
	for k, i := range uuidDigits {
		dst[i], dst[i+1] = digits[id[k]>>4], digits[id[k]&0xf]
	}
	dst[8], dst[13], dst[18], dst[23] = '-', '-', '-', '-'
	return dst[:]
}

func uvarintLen(n int) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

// appendRecord frames one record onto b.
func appendRecord(b []byte, kind uint8, task, name string, data, extra []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0, kindPacked, kind)
	if packed, ok := appendUUID(b, task); ok {
		b = packed
	} else {
		b = append(b[:start+headerSize], kind)
		b = binary.AppendUvarint(b, uint64(len(task)))
		b = append(b, task...)
	}
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = binary.AppendUvarint(b, uint64(len(data)))
	b = append(b, data...)
	b = append(b, extra...)
	payload := b[start+headerSize:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
	return b
}

// Decode decodes the record at the start of b and returns it with its framed size. It returns
// ErrTorn when b ends inside the record and ErrCorrupt when the record is invalid; it never
// panics, whatever b holds.
func Decode(b []byte) (Record, int, error) {
	r, n, err := decode(b)
	if err != nil {
		return Record{}, 0, err
	}
	var id [36]byte
	return Record{Kind: r.kind, Task: string(r.taskID(&id)), Name: string(r.name), Data: r.data, Extra: r.extra}, n, nil
}

// rawRecord is a decoded record whose fields all alias the buffer: decoding allocates nothing.
type rawRecord struct {
	kind                    uint8
	task, name, data, extra []byte
	packed                  bool // task is a UUID's 16 bytes (kindPacked)
}

// taskID returns the record's task id as text, written into buf when the record holds its bytes.
func (r *rawRecord) taskID(buf *[36]byte) []byte {
	if r.packed {
		return formatUUID(buf, r.task)
	}
	return r.task
}

// peek frames the record at the start of b as decode does and reads its kind alone, without
// checking its CRC or reading its fields: a compaction's first pass looks for tombstones and
// decodes those, and its second pass decodes every record.
func peek(b []byte) (rawRecord, int, error) {
	if len(b) < headerSize {
		return rawRecord{}, 0, ErrTorn
	}
	n := binary.LittleEndian.Uint32(b)
	if n < 4 || n > MaxRecordBytes {
		return rawRecord{}, 0, ErrCorrupt
	}
	if uint64(len(b)-headerSize) < uint64(n) {
		return rawRecord{}, 0, ErrTorn
	}
	kind := b[headerSize]
	if kind == kindPacked {
		kind = b[headerSize+1]
	}
	return rawRecord{kind: kind}, headerSize + int(n), nil
}

// decode is Decode without the strings: compaction reads every record of a segment and needs
// the task id only to look it up.
func decode(b []byte) (rawRecord, int, error) {
	if len(b) < headerSize {
		return rawRecord{}, 0, ErrTorn
	}
	n := binary.LittleEndian.Uint32(b)
	if n < 4 || n > MaxRecordBytes { // kind and three lengths at least
		return rawRecord{}, 0, ErrCorrupt
	}
	if uint64(len(b)-headerSize) < uint64(n) {
		return rawRecord{}, 0, ErrTorn
	}
	payload := b[headerSize : headerSize+int(n)]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return rawRecord{}, 0, ErrCorrupt
	}
	r := rawRecord{kind: payload[0]}
	p := payload[1:]
	if r.kind == kindPacked {
		// The record's kind, then the task id's 16 bytes; a packed record holds no packed one.
		if len(p) < 1+16+2 || p[0] == kindPacked {
			return rawRecord{}, 0, ErrCorrupt
		}
		r.kind, r.task, r.packed = p[0], p[1:17], true
		p = p[17:]
	}
	field := func() ([]byte, bool) {
		l, k := binary.Uvarint(p)
		// Only the canonical (shortest) varint: a record has one encoding.
		if k <= 0 || l > uint64(len(p)-k) || k != uvarintLen(int(l)) {
			return nil, false
		}
		f := p[k : k+int(l)]
		p = p[k+int(l):]
		return f, true
	}
	ok1 := true
	if !r.packed {
		r.task, ok1 = field()
	}
	var ok2, ok3 bool
	r.name, ok2 = field()
	r.data, ok3 = field()
	if !ok1 || !ok2 || !ok3 {
		return rawRecord{}, 0, ErrCorrupt
	}
	r.extra = p
	return r, headerSize + int(n), nil
}
