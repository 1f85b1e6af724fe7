package audit

import (
	"maps"
	"testing"
	"time"
)

// Each session_ended is in the story as written, first and last access and status
// classes too, and is complete exactly when the files hold as many of the instance's
// access events as it counts.
func TestSessionStoryClosed(t *testing.T) {
	tests := []struct {
		name     string
		accesses int // of the 3 it counts, those in the files
		want     bool
	}{
		{"every request it counts is in the files", 3, true},
		{"one of them is not", 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newAlStoryLog(t)
			rec := &Record{ID: "sess-closed", User: "alice", Role: "ops", Start: alT0, Expires: alT0.Add(time.Hour)}
			l.activate(alT0, rec)
			statuses := []int{200, 404, 201}
			for i := range tt.accesses {
				l.access(alT0.Add(time.Duration(i+1)*time.Second), rec, "GET", "/x", statuses[i], 10, nil)
			}
			first, last := alT0.Add(time.Second), alT0.Add(3*time.Second)
			l.at(alT0.Add(time.Minute)).SessionEnded(SessionEnd{User: "alice", Role: "ops", SessionID: rec.ID, How: "revoked", By: "carol",
				Requests: 3, BytesOut: 30, First: first, Last: last, Statuses: [6]int64{2: 2, 4: 1}})
			s, err := SessionStory([]Input{Data("a.log", l.buf.Bytes())}, rec.ID, alT0.Add(2*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Closed) != 1 {
				t.Fatalf("closed %+v, want one", s.Closed)
			}
			c := s.Closed[0]
			if c.How != "revoked" || c.By != "carol" || c.Requests != 3 || c.BytesOut != 30 || !c.First.Equal(first) || !c.Last.Equal(last) ||
				!maps.Equal(c.Statuses, map[string]int64{"2xx": 2, "4xx": 1}) || c.Instance != "inst-s" {
				t.Errorf("closed %+v", c)
			}
			if c.Complete != tt.want {
				t.Errorf("complete %v, want %v", c.Complete, tt.want)
			}
		})
	}
}
