package sdk_test

import (
	"encoding/json"
	"testing"

	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/sdk"
)

// TestArtifactRoundTripKeepsItsID: an artifact read with Artifact and stored again with
// PutArtifact is the same artifact, under the same id. Artifact decoded content and metadata
// numbers into float64, so 9007199254740993 came back as 9007199254740992 and 1.0 as 1, and
// storing what was read made another artifact.
func TestArtifactRoundTripKeepsItsID(t *testing.T) {
	d := startDaemon(t, "", fake.Options{})
	c := newClient(t, d.URL, sdk.Options{})
	meta := map[string]any{"n": json.Number("2.50")}
	ref, err := c.PutArtifact(t.Context(), client.Artifact{Kind: client.Other,
		Content: map[string]any{"big": json.Number("9007199254740993"), "f": json.Number("1.0")}, Metadata: &meta})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Artifact(t.Context(), ref.Id)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.PutArtifact(t.Context(), client.Artifact{Kind: got.Kind, Content: got.Content, Metadata: got.Metadata,
		Parent: got.Parent, Tags: got.Tags})
	if err != nil {
		t.Fatal(err)
	}
	if again.Id != ref.Id {
		b, _ := json.Marshal(got)
		t.Fatalf("the artifact read back (%s) stores as %s, want its own id %s", b, again.Id, ref.Id)
	}
}
