// Package yamldoc decodes the daemon's YAML files (its configuration, the keys file) strictly:
// unknown fields are refused, and so is a second document, whose keys would otherwise be
// ignored without a word.
package yamldoc

import (
	"bytes"
	"errors"
	"io"

	"gopkg.in/yaml.v3"
)

// ErrSeveralDocuments is Decode's refusal of a file with a second document that holds anything.
var ErrSeveralDocuments = errors.New("the file holds more than one YAML document (a second after ---): put every key in one")

// Decode decodes the first document of data into v, refusing unknown fields. An empty file is
// io.EOF, v untouched. Any later document that holds anything is ErrSeveralDocuments; empty
// ones (a trailing "---") are not.
func Decode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return err
	}
	for {
		var next yaml.Node
		switch err := dec.Decode(&next); {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		case len(next.Content) > 0 && next.Content[0].ShortTag() != "!!null":
			return ErrSeveralDocuments
		}
	}
}
