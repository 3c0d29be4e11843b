// Package openapi embeds the contract, orchestratord.yaml, so that the daemon serves exactly this
// document at /openapi.json (the generated gen/api embeds a rewritten copy for validation).
package openapi

import (
	_ "embed"
	"encoding/json"
	"fmt"

	"gopkg.in/yaml.v3"
)

//go:embed orchestratord.yaml
var yamlDoc []byte

// YAML returns the contract as written.
func YAML() []byte { return append([]byte(nil), yamlDoc...) }

// JSON returns the contract converted to JSON.
func JSON() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(yamlDoc, &doc); err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	return json.Marshal(doc)
}
