package audit

import (
	"encoding/json"
	"errors"
	"fmt"
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
				BodyBytes: &size, BodySHA256: "abc", BodyType: "application/json; charset=utf-8", BodyKey: "jit/bodies/sess/1.body"},
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
		// record_bodies keeps bytes: its limit may fall inside a character.
		{"a text body cut inside a character", func(string) ([]byte, error) { return []byte("{\"n\":\"\xc3\xa9\xc3"), nil }, "{\"n\":\"é", "the first 9 bytes"},
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
			if p == nil || p.Text != tt.wantText || !strings.Contains(p.Comment, tt.wantNote) || post.Request.BodySize != 14 || p.MimeType != "application/json; charset=utf-8" {
				t.Errorf("the POST's body: %+v, want text %q, a comment saying %q and the request's Content-Type", p, tt.wantText, tt.wantNote)
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

// A URI the log cut (inside a %XX escape, say), or one that is no request target,
// is shown as far as it goes, with a note: it never costs the reviewer the archive.
func TestSessionHARShowsEveryLoggedURI(t *testing.T) {
	long := "/api/" + strings.Repeat("%C3%A9", 200)
	tests := []struct {
		name     string
		uri      string
		length   int64
		wantURL  string
		wantNote string
	}{
		{"cut inside an escape", long[:MaxFieldRunes-1], int64(len(long)), "https://console.example" + long[:MaxFieldRunes-2],
			fmt.Sprintf("its first %d of %d characters", MaxFieldRunes-1, len(long))},
		{"not a request target", "/a%zz?q=1", 0, "https://console.example/a%25zz?q=1", "is not a request target"},
		{"whole", "/ok?a=1", 0, "https://console.example/ok?a=1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := harStory()
			s.Accesses[0].URI, s.Accesses[0].URILength = tt.uri, tt.length
			h, err := s.HAR(HAROptions{Origin: "https://console.example"})
			if err != nil {
				t.Fatalf("the archive failed for one URI: %v", err)
			}
			got := h.Log.Entries[0].Request
			if got.URL != tt.wantURL || !strings.Contains(got.Comment, tt.wantNote) || (tt.wantNote == "") != (got.Comment == "") {
				t.Fatalf("url %q, comment %q; want %q and a comment saying %q", got.URL, got.Comment, tt.wantURL, tt.wantNote)
			}
		})
	}
}

// Entries are oldest first whatever the order of the log files given, and say where
// in the log their access event is.
func TestSessionHAROrdersEntriesByTime(t *testing.T) {
	s := harStory()
	s.Accesses[0], s.Accesses[1] = s.Accesses[1], s.Accesses[0] // the later file given first
	h, err := s.HAR(HAROptions{Origin: "https://console.example"})
	if err != nil {
		t.Fatal(err)
	}
	if e := h.Log.Entries; e[0].Request.Method != "GET" || e[1].Request.Method != "POST" || e[0].Comment != "logged at i1" {
		t.Fatalf("entries %s (%s), %s: want the GET first", e[0].Request.Method, e[0].Comment, e[1].Request.Method)
	}
}
