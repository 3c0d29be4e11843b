package journal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// Record is one decoded journal record. Its byte slices alias the buffer it was decoded from.
type Record struct {
	Kind  uint8
	Task  string
	Name  string
	Data  []byte
	Extra []byte
}

// KindRetire is the journal's own tombstone kind; callers use kinds below it.
const KindRetire uint8 = 0xff

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

// recordSize is the framed size of a record with these fields.
func recordSize(task, name string, data, extra []byte) int {
	return headerSize + 1 + uvarintLen(len(task)) + len(task) + uvarintLen(len(name)) + len(name) +
		uvarintLen(len(data)) + len(data) + len(extra)
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
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, kind)
	b = binary.AppendUvarint(b, uint64(len(task)))
	b = append(b, task...)
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
	return Record{Kind: r.kind, Task: string(r.task), Name: string(r.name), Data: r.data, Extra: r.extra}, n, nil
}

// rawRecord is a decoded record whose fields all alias the buffer: decoding allocates nothing.
type rawRecord struct {
	kind                    uint8
	task, name, data, extra []byte
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
	var ok1, ok2, ok3 bool
	r.task, ok1 = field()
	r.name, ok2 = field()
	r.data, ok3 = field()
	if !ok1 || !ok2 || !ok3 {
		return rawRecord{}, 0, ErrCorrupt
	}
	r.extra = p
	return r, headerSize + int(n), nil
}
