// Package contracts holds the daemon's contract tests: the whole app (impl/app) is started on a
// loopback listener with a deterministic in-process engine, and every operation of
// openapi/orchestratord.yaml is exercised through the generated Go client (gen/client).
//
// Every response the tests receive is validated against the spec by the client's transport
// (status, headers and body with kin-openapi's openapi3filter.ValidateResponse, plus the
// X-Correlation-Id echo rule and the error code → status table), and every Server-Sent Events
// frame is validated against the schema named for its event in the stream operation's
// x-sse-events extension, with the stream's ordering rules (started first, contiguous token
// indices, exactly one final end or error, strictly increasing ids, no token after a cancel).
//
// The package has no non-test code besides this comment.
package contracts
