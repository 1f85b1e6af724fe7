package audit

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func harStory() *Story {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	size := int64(14)
	return &Story{SessionID: "sess", User: "alice", Role: "ops",
		Activation: &StoryActivation{At: at, Justification: "INC-1 restart", Ticket: "INC-1"},
		Accesses: []StoryAccess{
			{At: at.Add(time.Second), Where: "i1", Method: "GET", URI: "/admin/users?page=2&q=a%20b", Status: 200, Bytes: 512, DurationUS: 1500},
			{At: at.Add(2 * time.Second), Where: "i2", Method: "POST", URI: "/admin/users", Status: 201, Bytes: 10, DurationUS: 2500,
				BodyBytes: &size, BodySHA256: "abc", BodyKey: "jit/bodies/sess/1.body"},
		},
		End: StoryEnd{How: EndRevoked, By: "carol", At: at.Add(time.Minute)}}
}

// The archive holds each request as the upstream received it, with the body where it
// was recorded, and says what it could not.
func TestSessionHAR(t *testing.T) {
	tests := []struct {
		name     string
		body     func(string) ([]byte, error)
		wantText string
		wantNote string
	}{
		{"bodies not read", nil, "", "give --config"},
		{"a recorded body", func(key string) ([]byte, error) { return []byte(`{"delete":tru`), nil }, `{"delete":tru`, "the first 13 bytes"},
		{"an unreadable body", func(string) ([]byte, error) { return nil, errors.New("storage down") }, "", "storage down"},
		{"a binary body", func(string) ([]byte, error) { return []byte{0xff, 0xfe}, nil }, "", "not text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := harStory().HAR(HAROptions{Origin: "https://console.example", Version: "v1", Body: tt.body})
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Log.Entries) != 2 || h.Log.Version != "1.2" || h.Log.Creator.Name != "caddy-jit" {
				t.Fatalf("HAR log %+v", h.Log)
			}
			get, post := h.Log.Entries[0], h.Log.Entries[1]
			if get.Request.URL != "https://console.example/admin/users?page=2&q=a%20b" || get.Response.Status != 200 || get.Response.BodySize != 512 || get.Time != 1.5 {
				t.Errorf("the GET: %+v", get)
			}
			if get.StartedDateTime != "2026-12-03T10:00:00.9985Z" {
				t.Errorf("the GET started at %s, want its access time less its duration", get.StartedDateTime)
			}
			if len(get.Request.QueryString) != 2 || get.Request.QueryString[1] != (HARHeader{"q", "a b"}) {
				t.Errorf("the GET's query: %+v", get.Request.QueryString)
			}
			if got := get.Request.Headers; len(got) != 3 || got[0] != (HARHeader{"X-Jit-User", "alice"}) || got[2] != (HARHeader{"X-Jit-Session", "sess"}) {
				t.Errorf("identity headers: %+v", got)
			}
			if get.Request.PostData != nil {
				t.Error("a GET has postData")
			}
			p := post.Request.PostData
			if p == nil || p.Text != tt.wantText || !strings.Contains(p.Comment, tt.wantNote) || post.Request.BodySize != 14 {
				t.Errorf("the POST's body: %+v, want text %q and a comment saying %q", p, tt.wantText, tt.wantNote)
			}
			raw, _ := json.Marshal(h)
			for _, never := range []string{"Cookie", "Authorization", "X-Jit-Assertion"} {
				if strings.Contains(string(raw), never) {
					t.Errorf("the HAR holds %s", never)
				}
			}
			if !strings.Contains(h.Log.Comment, "ended: revoked by carol") || !strings.Contains(h.Log.Comment, `"INC-1 restart"`) {
				t.Errorf("the log's comment: %s", h.Log.Comment)
			}
		})
	}
	for _, origin := range []string{"", "console.example", "ftp://x", "https://x/path", "https://"} {
		if _, err := harStory().HAR(HAROptions{Origin: origin}); err == nil || !strings.Contains(err.Error(), "scheme and host") {
			t.Errorf("origin %q: %v, want a refusal naming what to give", origin, err)
		}
	}
}
