package stepup

import (
	"encoding/base64"
	"encoding/json"
	"testing"
)

var b64 = base64.RawURLEncoding

func mustUnmarshal(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decoding %s: %v", raw, err)
	}
}
