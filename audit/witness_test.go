package audit

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// A witness that fails at first gets every checkpoint, in order, once it answers.
func TestWitnessRetriesInOrderAndDrainsAtStop(t *testing.T) {
	var mu sync.Mutex
	var got []string
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= 2 || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		got = append(got, string(body))
	}))
	defer srv.Close()
	w := NewWitness(srv.URL, nil, zap.NewNop())
	for _, cp := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		w.Send([]byte(cp))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, " ") != `{"n":1} {"n":2} {"n":3}` {
		t.Fatalf("the witness received %v", got)
	}
	if c := w.Counts(); c.Sent != 3 || c.Failed != 2 || c.Pending != 0 {
		t.Fatalf("counts %+v", c)
	}
}

// A stop that cannot reach the witness says how many checkpoints it did not take.
func TestWitnessStopReportsWhatItCouldNotSend(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer srv.Close()
	w := NewWitness(srv.URL, nil, zap.NewNop())
	w.Send([]byte(`{"n":1}`))
	w.Send([]byte(`{"n":2}`))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := w.Stop(ctx)
	if err == nil || !strings.Contains(err.Error(), "last 2 checkpoint(s)") {
		t.Fatalf("Stop: %v", err)
	}
}
