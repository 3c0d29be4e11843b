package config

import (
	"strings"
	"testing"
)

// TestAddrInvalidPortRefused: an addr whose port is out of range or not a port at all is
// refused naming addr, not found at listen after the state dir, keys, journal and pools were
// set up.
func TestAddrInvalidPortRefused(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:99999", "127.0.0.1:-1"} {
		_, err := load(t, "addr: \""+addr+"\"\n"+minimal, Overrides{})
		if err == nil || !strings.Contains(err.Error(), "addr") {
			t.Errorf("addr %s: Load error %v; want an error naming addr", addr, err)
		}
	}
}
