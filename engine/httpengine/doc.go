// Package httpengine is the HTTP layer the engine adapters share: kept-alive engine
// connections (Conns) whose answers are read in one pooled buffer, a bounded
// text/event-stream reader, requests bounded by an idle timeout, and the classification of
// transport and stream failures into engine kinds. Each adapter keeps its own protocol: the
// request bodies, the decoding of its events and the mapping of its error answers (passed in
// as Client.OnStatus).
//
// On Linux the streamed answers on Conns connections are read by a few pollers of the
// package's own (see poller): an adapter hands its line or event handling to EachLine or
// EventReader.Each, which a poller's goroutine runs as bytes come, while the generation's
// goroutine waits once for the end.
package httpengine
