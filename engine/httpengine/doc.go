// Package httpengine is the HTTP layer the openai, tgi and triton adapters share: a bounded
// text/event-stream reader, requests bounded by an idle timeout, and the classification of
// transport and stream failures into engine kinds. Each adapter keeps its own protocol: the
// request bodies, the decoding of its events and the mapping of its error answers (passed in
// as Client.OnStatus).
package httpengine
