package tenant

import "testing"

// TestKeysFractionalLimitsRefused: a keys file's rpm, tpm or token_budget given a fraction is
// refused naming the entry. It was truncated, and a limit below 1 became 0, which means no
// limit: rpm: 0.5 left the key unthrottled.
func TestKeysFractionalLimitsRefused(t *testing.T) {
	for _, field := range []string{"rpm: 0.5", "tpm: 0.9", "token_budget: 0.5"} {
		doc := "keys: [{name: alice, key: alice-key-0123456789, scopes: [tasks], " + field + "}]\n"
		keys, err := Parse([]byte(doc))
		if err == nil {
			k := keys[0]
			t.Errorf("%s accepted: RPM=%d TPM=%d TokenBudget=%d (0 = unlimited); want an error naming the field",
				field, k.RPM, k.TPM, k.TokenBudget)
		}
	}
}
