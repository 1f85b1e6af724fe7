package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// BenchmarkAccess is the access event of one privileged request, written through the
// chain into zap's JSON encoder: the audit cost every proxied request pays.
func BenchmarkAccess(b *testing.B) {
	a := NewWriter(alLogger(io.Discard), NewChain("bench"), func() time.Time { return alT0 })
	holder := Holder{User: "alice", Role: "db-admin", SessionID: "AAAAAAAAAAAAAAAAAAAAAA"}
	b.Run("normal fields", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a.Access(holder, "192.0.2.1", "GET", "/api/dashboards/uid/abc?orgId=1", 200, 1234, 5*time.Millisecond, nil)
		}
	})
	b.Run("batched output, flushes included", func(b *testing.B) {
		// The whole cost of an event: the request's queueing and the flusher's linking,
		// encoding and write, with a flush every 512 events (as under load).
		c := NewChain("bench-batched")
		c.Batch(Output{Writer: io.Discard, FlushInterval: time.Hour})
		defer c.Unbatch(alT0)
		w := NewWriter(alLogger(io.Discard), c, func() time.Time { return alT0 })
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			w.Access(holder, "192.0.2.1", "GET", "/api/dashboards/uid/abc?orgId=1", 200, 1234, 5*time.Millisecond, nil)
			if n++; n%512 == 0 {
				c.Flush()
			}
		}
	})
	b.Run("uri over the bound", func(b *testing.B) {
		long := "/q?x=" + strings.Repeat("y", 4*MaxFieldRunes)
		b.ReportAllocs()
		for b.Loop() {
			a.Access(holder, "192.0.2.1", "GET", long, 200, 1234, 5*time.Millisecond, nil)
		}
	})
}

func TestAuditFieldsBoundedWhereEventsAreWritten(t *testing.T) {
	over := strings.Repeat("x", MaxFieldRunes+1)
	for _, tc := range []struct {
		name, value string
		// want is the value the line keeps; cut says whether _len and _sha256 follow.
		want string
		cut  bool
	}{
		{name: "short", value: "fixing the replica lag", want: "fixing the replica lag"},
		{name: "empty", value: "", want: ""},
		{name: "at the bound in ASCII", value: strings.Repeat("x", MaxFieldRunes), want: strings.Repeat("x", MaxFieldRunes)},
		{name: "at the bound in two-byte characters", value: strings.Repeat("é", MaxFieldRunes), want: strings.Repeat("é", MaxFieldRunes)},
		{name: "one over the bound", value: over, want: over[:MaxFieldRunes], cut: true},
		{name: "15,000 characters", value: strings.Repeat("A", 15000), want: strings.Repeat("A", MaxFieldRunes), cut: true},
		{name: "four-byte characters over the bound", value: strings.Repeat("🚀", MaxFieldRunes+5), want: strings.Repeat("🚀", MaxFieldRunes), cut: true},
		{name: "cut never splits a character", value: "a" + strings.Repeat("€", MaxFieldRunes), want: "a" + strings.Repeat("€", MaxFieldRunes-1), cut: true},
		{name: "invalid bytes count as one character each", value: strings.Repeat("\xff", MaxFieldRunes+3), want: strings.Repeat("\uFFFD", MaxFieldRunes), cut: true},
		{name: "CR LF over the bound stay inside the value", value: strings.Repeat("\r\n{\"event\":\"x\"}", 200), want: strings.Repeat("\r\n{\"event\":\"x\"}", 200)[:MaxFieldRunes], cut: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			a := NewWriter(alLogger(&buf), NewChain("bound-test"), func() time.Time { return alT0 })
			a.Event(EventActivationFailed, zap.String("user", "alice"), zap.String("justification", tc.value), zap.String("reason", "totp_invalid"))
			a.Event(EventActivationFailed, zap.String("user", "alice"), zap.String("session_id", tc.value))
			lines := alLines(buf.String())
			if len(lines) != 2 {
				t.Fatalf("want 2 lines, got %d: %q", len(lines), buf.String())
			}
			prev := ""
			for i, key := range []string{"justification", "session_id"} {
				var ev map[string]any
				if err := json.Unmarshal([]byte(lines[i]), &ev); err != nil {
					t.Fatalf("line %d is not JSON: %v", i+1, err)
				}
				if got := ev[key]; got != tc.want {
					t.Errorf("%s: kept %d characters, want %d", key, len([]rune(fmt.Sprint(got))), len([]rune(tc.want)))
				}
				gotLen, hasLen := ev[key+CutLenSuffix]
				gotSum, hasSum := ev[key+CutSHA256Suffix]
				if !tc.cut {
					if hasLen || hasSum {
						t.Errorf("%s within the bound has %s_len %v / _sha256 %v", key, key, gotLen, gotSum)
					}
				} else {
					sum := sha256.Sum256([]byte(tc.value))
					if gotLen != float64(len(tc.value)) || gotSum != hex.EncodeToString(sum[:]) {
						t.Errorf("%s: _len %v, _sha256 %v; want %d and the SHA-256 of the whole value", key, gotLen, gotSum, len(tc.value))
					}
				}
				h, err := VerifyLine([]byte(lines[i]), prev)
				if err != nil {
					t.Fatalf("line %d does not verify: %v", i+1, err)
				}
				prev = h
			}
			res, err := VerifyChain([]Input{Data("audit.log", buf.Bytes())}, VerifyOptions{})
			if err != nil || !res.Intact {
				t.Fatalf("the chain does not verify: %v %+v", err, res.Breaks)
			}
		})
	}
}

func TestAuditListsBoundedWhereEventsAreWritten(t *testing.T) {
	many := make([]string, MaxItems+6)
	for i := range many {
		many[i] = fmt.Sprintf("user%d", i)
	}
	long := []string{"bob", strings.Repeat("z", MaxFieldRunes+10)}
	for _, tc := range []struct {
		name  string
		items []string
		want  []string
		cut   bool
	}{
		{name: "within the bounds", items: []string{"bob", "carol"}, want: []string{"bob", "carol"}},
		{name: "too many items", items: many, want: many[:MaxItems], cut: true},
		{name: "an item over the bound", items: long, want: []string{"bob", long[1][:MaxFieldRunes]}, cut: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			a := NewWriter(alLogger(&buf), NewChain("bound-test"), func() time.Time { return alT0 })
			a.Event(EventRequestApproved, zap.String("user", "alice"), zap.Strings("approvers", tc.items))
			var ev struct {
				Approvers []string `json:"approvers"`
				Len       *int     `json:"approvers_len"`
				SHA256    *string  `json:"approvers_sha256"`
			}
			if err := json.Unmarshal(buf.Bytes(), &ev); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ev.Approvers, tc.want) {
				t.Errorf("approvers: kept %d items, want %d", len(ev.Approvers), len(tc.want))
			}
			if tc.cut != (ev.Len != nil && ev.SHA256 != nil) {
				t.Errorf("cut %v, but approvers_len %v, approvers_sha256 %v", tc.cut, ev.Len, ev.SHA256)
			}
			if tc.cut && *ev.Len != len(tc.items) {
				t.Errorf("approvers_len %d, want %d", *ev.Len, len(tc.items))
			}
			if _, err := VerifyLine(buf.Bytes(), ""); err != nil {
				t.Fatalf("the line does not verify: %v", err)
			}
		})
	}
}

// TestAccessEventWithinBoundsAllocatesNothingMore guards the hot path: bounding adds no
// allocation to the access event of a request with fields of normal size.
// .ci/run runs it without -race, where zap's buffer pool keeps what it is given.
func TestAccessEventWithinBoundsAllocatesNothingMore(t *testing.T) {
	if raceDetector {
		t.Skip("allocation counts vary under -race: sync.Pool drops buffers at random")
	}
	a := NewWriter(alLogger(io.Discard), NewChain("alloc"), func() time.Time { return alT0 })
	holder := Holder{User: "alice", Role: "db-admin", SessionID: "AAAAAAAAAAAAAAAAAAAAAA"}
	uri := "/api/" + strings.Repeat("p", MaxFieldRunes-5)
	write := func(uri string) func() {
		return func() { a.Access(holder, "192.0.2.1", "GET", uri, 200, 1, time.Millisecond, nil) }
	}
	within := testing.AllocsPerRun(200, write(uri))
	short := testing.AllocsPerRun(200, write("/"))
	if within != short {
		t.Errorf("an access event with a %d-character URI makes %.0f allocations, one with \"/\" %.0f: bounding must cost no allocation within the bound", len(uri), within, short)
	}
	if cut := testing.AllocsPerRun(50, write(uri+"xx")); cut <= short {
		t.Errorf("a cut URI makes %.0f allocations, not more than a short one (%.0f): is it cut at all?", cut, short)
	}
}
