package openapi

import (
	"encoding/json"
	"testing"
)

func TestJSON(t *testing.T) {
	b, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.0.3" || doc.Paths["/v1/tasks"]["post"].(map[string]any)["operationId"] != "createTask" {
		t.Fatalf("doc = %s...", b[:200])
	}
}
