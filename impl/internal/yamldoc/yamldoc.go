// Package yamldoc decodes the daemon's YAML files (its configuration, the keys file) strictly:
// unknown fields are refused, and so is a second document, whose keys would otherwise be
// ignored without a word, and a YAML error anywhere in the file, after the first document too.
package yamldoc

import (
	"bytes"
	"errors"
	"io"

	"gopkg.in/yaml.v3"
)

// ErrSeveralDocuments is Check's refusal of a file with a second document that holds anything.
var ErrSeveralDocuments = errors.New("the file holds more than one YAML document (a second after ---): put every key in one")

// Check reads every document of data: a YAML error in any of them is returned (yaml.Unmarshal
// reads the first only), and a later document that holds anything is ErrSeveralDocuments;
// empty ones (a trailing "---") are not.
func Check(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 0; ; i++ {
		var n yaml.Node
		switch err := dec.Decode(&n); {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		case i > 0 && len(n.Content) > 0 && n.Content[0].ShortTag() != "!!null":
			return ErrSeveralDocuments
		}
	}
}

// Decode checks data (Check) and decodes its first document into v, refusing unknown fields.
// An empty file is io.EOF, v untouched.
func Decode(data []byte, v any) error {
	if err := Check(data); err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(v)
}
