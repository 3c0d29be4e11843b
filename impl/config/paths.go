package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// checkNode walks a YAML document against the type it decodes into and returns the first
// problem as "<path>: <what is wrong>", with the path written as in the YAML
// (admission.capacity, pools[0].replicas[1].url): unknown keys, values of the wrong kind and
// values a field's own UnmarshalYAML refuses (durations). It never names a Go type. A nil
// error means the strict decoder will accept the document.
func checkNode(n *yaml.Node, t reflect.Type, path string) error {
	if n.Kind == 0 { // an empty document
		return nil
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return checkNode(n.Content[0], t, path)
	}
	if n.Kind == yaml.AliasNode {
		return checkNode(n.Alias, t, path)
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Tag == "!!null" {
		return nil // leaves the field unset, whatever its type
	}
	if t == reflect.TypeFor[DeviceSets]() { // one list, or a list of lists: check the shape given
		if n.Kind == yaml.SequenceNode && len(n.Content) > 0 && n.Content[0].Kind == yaml.SequenceNode {
			return checkNode(n, reflect.TypeFor[[][]int](), path)
		}
		return checkNode(n, reflect.TypeFor[[]int](), path)
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return fmt.Errorf("%s: %s", where(path), strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%s: want a mapping of keys to values, got %s", where(path), describe(n))
		}
		fields := map[string]reflect.StructField{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = f
		}
		if err := duplicateKey(n, path); err != nil {
			return err
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			f, ok := fields[key]
			if !ok {
				return fmt.Errorf("%s: unknown field", join(path, key))
			}
			if err := checkNode(n.Content[i+1], f.Type, join(path, key)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("%s: want a mapping of keys to values, got %s", where(path), describe(n))
		}
		if err := duplicateKey(n, path); err != nil {
			return err
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkNode(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value)); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s: want a list, got %s", where(path), describe(n))
		}
		for i, c := range n.Content {
			if err := checkNode(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	default:
		if n.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s: want %s, got %s", where(path), scalarKind(t), describe(n))
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return fmt.Errorf("%s: want %s, got %q", where(path), scalarKind(t), n.Value)
		}
		// The decoder truncates a fraction into an integer (capacity: 1.9 became 1): refused.
		if isInteger(t) && n.ShortTag() == "!!float" {
			return fmt.Errorf("%s: want a whole number, got %q", where(path), n.Value)
		}
	}
	return nil
}

// duplicateKey refuses a mapping that sets a key twice (the decoder does too).
func duplicateKey(n *yaml.Node, path string) error {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if line, dup := seen[k.Value]; dup {
			return fmt.Errorf("%s: set twice (lines %d and %d)", join(path, k.Value), line, k.Line)
		}
		seen[k.Value] = k.Line
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func where(path string) string {
	if path == "" {
		return "the document"
	}
	return path
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return strconv.Quote(n.Value)
	}
}

func scalarKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	default:
		return "a string"
	}
}

// isInteger reports whether t is an integer kind (a time.Duration is one, but is written as
// a string such as 5s, which the float check above does not see).
func isInteger(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}
