package httpengine

import (
	"bufio"
	"errors"
	"io"
)

var errClosedBody = errors.New("read on a closed body")

// EachLine calls fn with each line of body, without its end ("\n" or "\r\n"), until fn stops
// (true) or fails, or the body ends. A line is valid during the call; one longer than body's
// buffer is assembled in *long, up to max bytes.
//
// It returns nil when fn stopped, fn's error, or the body's: io.EOF at its end after a whole
// line, io.ErrUnexpectedEOF inside one, tooLong for a line over max, or the read's error.
//
// A body from Conns.Post is read by its connection's poller, which runs fn (see poller): a
// token costs one read system call and no goroutine wake-up of its own. Another reader is
// pulled with ReadSlice on the caller's goroutine.
func EachLine(body SliceReader, maxLen int, tooLong error, long *[]byte, fn func(line []byte) (stop bool, err error)) error {
	if cb, ok := body.(*connBody); ok {
		if cb.closed {
			return errClosedBody
		}
		return cb.eachLine(maxLen, tooLong, long, fn, cb.pushLines)
	}
	for {
		line, err := ReadLine(body, maxLen, tooLong, long)
		if err != nil {
			return err
		}
		if stop, err := fn(line); stop || err != nil {
			return err
		}
	}
}

// ReadLine returns br's next line without its end ("\n" or "\r\n"): a view of br's buffer, or
// of *long where a line longer than that buffer is assembled, up to max bytes (tooLong
// beyond), valid until the next read. A body that ends inside a line gives
// io.ErrUnexpectedEOF.
func ReadLine(br SliceReader, maxLen int, tooLong error, long *[]byte) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case err == nil:
		return trimEOL(line), nil
	case errors.Is(err, bufio.ErrBufferFull):
	case errors.Is(err, io.EOF) && len(line) > 0:
		return nil, io.ErrUnexpectedEOF
	default:
		return nil, err
	}
	*long = append((*long)[:0], line...)
	for {
		line, err = br.ReadSlice('\n')
		if len(*long)+len(line) > maxLen {
			return nil, tooLong
		}
		*long = append(*long, line...)
		switch {
		case err == nil:
			return trimEOL(*long), nil
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}
