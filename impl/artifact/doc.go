// Package artifact is a content-addressed store of JSON artifacts (plans, summaries, diffs,
// traces) on local disk.
//
// # Identity and canonical form
//
// An artifact's id is "sha256:" followed by the lowercase hex SHA-256 of its canonical JSON.
// The canonical JSON is the artifact as one JSON object with the members "content", "kind",
// "metadata", "parent" and "tags"; "metadata" is left out when empty or nil, "parent" when
// empty, and "tags" when empty or nil (so an empty tag list and no tag list give the same id).
// Canonical is the encoder, and it is defined as follows:
//
//   - no insignificant whitespace;
//   - object members sorted by key, comparing the keys' UTF-8 bytes (what encoding/json and
//     sort.Strings do; RFC 8785 compares UTF-16 code units instead, which differs only for
//     keys mixing characters above U+FFFF with characters in U+E000..U+FFFF);
//   - strings: '"' and '\' are escaped as \" and \\, U+0008, U+0009, U+000A, U+000C and
//     U+000D as \b, \t, \n, \f and \r, the other characters below U+0020 as \u00xx (lowercase
//     hex); every other character, including '<', '>', '&', U+007F, U+2028 and U+2029, is
//     written as itself in UTF-8. Strings and keys that are not valid UTF-8 are refused;
//   - numbers: a json.Number is written exactly as its literal (after checking it is a valid
//     JSON number), so decoding a request with json.Decoder.UseNumber keeps every digit and
//     "1", "1.0" and "1e0" stay three different values with three different ids. A float64 is
//     written as encoding/json writes it (shortest form that round-trips; NaN and infinities
//     are refused); Go integer types are written in decimal. Decoding with plain float64
//     loses precision above 2^53, so callers must decode with UseNumber (ParseJSON does);
//   - arrays keep their order (tag order is part of the identity);
//   - values are limited to the JSON data model: nil, bool, string, json.Number, float64 and
//     Go integer/float types, []any, []string and map[string]any; anything else, and nesting
//     deeper than MaxDepth, is refused with ErrInvalid.
//
// The encoding is stable: Canonical(ParseJSON(Canonical(v))) == Canonical(v) (FuzzCanonical).
//
// # Storage
//
// Each artifact is one file, <dir>/<hex[0:2]>/<hex>.json, holding the canonical JSON of
// {content, created_ms, digest, id, kind, metadata, parent, tags}. A file is written
// atomically: a temporary file (".tmp-*") in the same shard directory is written, fsynced,
// closed and renamed over the final name, and then the shard directory is fsynced (and the
// store directory, when the shard directory was new). A crash can leave a stray temporary
// file, which readers never look at and Open removes (no Put runs before Open returns, so
// every temporary file it finds is stale). Putting content that is already stored writes nothing
// and returns the stored Ref, with its original created_ms. Every read recomputes the id
// from the file's fields and fails with ErrCorrupt on any mismatch; a Put over a corrupt file
// rewrites it.
//
// # Bounds
//
// The canonical form of an artifact may not exceed Options.MaxBytes (default 1 MiB): the
// encoder stops as soon as it passes the limit and Put returns ErrTooLarge. The store as a
// whole holds at most Options.MaxCount artifacts (default 100000) in files of at most
// Options.MaxTotalBytes together (default 1 GiB); a Put of new content beyond either returns
// ErrFull and writes nothing, while a Put of content already stored still succeeds (it takes
// no room). Open counts the files already there, so the limits and Usage hold across restarts;
// a file changed behind the store's back is accounted at its new size when a Put rewrites it.
//
// # Concurrency
//
// A Store is safe for concurrent use. A fixed array of mutexes, striped by the first byte of
// the digest, serialises the check-then-write of Puts of the same id, so concurrent Puts of
// the same content store it once (and count once). One more mutex guards the usage counters:
// a Put reserves its file's size before writing and gives it back if the write fails. The store assumes it
// is the only writer of its directory: two processes sharing one directory stay consistent
// (renames are atomic and content is addressed by digest) but may both write the same
// artifact, and the later created_ms then wins on disk. No goroutines are started.
package artifact
