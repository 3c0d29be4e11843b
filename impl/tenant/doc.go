// Package tenant knows who is calling: the keys file (names, scopes, weights and limits), the
// constant-time lookup of a presented key, and the per-key rate limits (requests and tokens per
// minute) with the numbers the OpenAI-style x-ratelimit-* headers report.
//
// A key is stored as the SHA-256 of its secret; a presented key is hashed and compared with
// every stored digest in constant time, so neither the time taken nor logs reveal which key
// matched or how close a wrong one was. Everything downstream names a key by its name.
//
// The Ring holds the current key set behind an atomic pointer: Replace swaps it (SIGHUP) without
// touching requests in flight or open streams, which keep the *Key they were admitted with.
package tenant
