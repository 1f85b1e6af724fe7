package session

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// blockingStorage is a file storage whose Store waits until released, as a slow or
// hung disk or network storage would; stored tells each Store that began.
type blockingStorage struct {
	*certmagic.FileStorage
	stored  chan string
	release chan struct{}
	fail    error
}

func newBlockingStorage(t *testing.T) *blockingStorage {
	return &blockingStorage{FileStorage: newStorage(t), stored: make(chan string, 100), release: make(chan struct{})}
}

func (b *blockingStorage) Store(ctx context.Context, key string, value []byte) error {
	b.stored <- key
	<-b.release
	if b.fail != nil {
		return b.fail
	}
	return b.FileStorage.Store(ctx, key, value)
}

// dropLog collects what a BodyWriter counts and reports.
type dropLog struct {
	mu      sync.Mutex
	counted map[string]int
	reports []BodyDrop
}

func (l *dropLog) config(clock *fakeClock) BodyWriterConfig {
	l.counted = map[string]int{}
	return BodyWriterConfig{
		Dropped: func(reason string) { l.mu.Lock(); l.counted[reason]++; l.mu.Unlock() },
		Report:  func(d BodyDrop) { l.mu.Lock(); l.reports = append(l.reports, d); l.mu.Unlock() },
		Now:     clock.Now,
	}
}

func (l *dropLog) snapshot() (map[string]int, []BodyDrop) {
	l.mu.Lock()
	defer l.mu.Unlock()
	counted := map[string]int{}
	for k, v := range l.counted {
		counted[k] = v
	}
	return counted, append([]BodyDrop(nil), l.reports...)
}

var bodyClaims = &Claims{Grant: Grant{SessionID: "AAAAAAAAAAAAAAAAAAAAAA", Subject: "alice", Role: "admin"}}

func TestBodyWriterPutDoesNotWaitForStorage(t *testing.T) {
	st := newBlockingStorage(t)
	var drops dropLog
	w := StartBodyWriter(&Records{storage: st}, drops.config(newFakeClock(epoch)))

	key, queued := w.Put(bodyClaims, []byte(`{"action":"delete"}`))
	if !queued || !strings.HasPrefix(key, "jit/bodies/"+bodyClaims.SessionID+"/") || !strings.HasSuffix(key, ".body") {
		t.Fatalf("Put = %q, %v; want a key under the session's folder, queued", key, queued)
	}
	// The write has begun and hangs: Put has returned all the same.
	if got := <-st.stored; got != key {
		t.Fatalf("storing %q, want %q", got, key)
	}
	if st.Exists(context.Background(), key) {
		t.Fatal("the body is in storage while the store still hangs")
	}
	close(st.release)
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := (&Records{storage: st}).LoadBody(context.Background(), key)
	if err != nil || string(got) != `{"action":"delete"}` {
		t.Fatalf("LoadBody = %q, %v; want the body", got, err)
	}
	if counted, _ := drops.snapshot(); len(counted) != 0 {
		t.Errorf("drops counted %v, want none", counted)
	}
}

func TestBodyWriterFullQueueDropsCountsAndReportsOncePerBurst(t *testing.T) {
	st := newBlockingStorage(t)
	clock := newFakeClock(epoch)
	var drops dropLog
	cfg := drops.config(clock)
	cfg.Length = 1
	w := StartBodyWriter(&Records{storage: st}, cfg)

	first, _ := w.Put(bodyClaims, []byte("one"))
	<-st.stored // the writer holds the first body, hung in Store
	second, queued := w.Put(bodyClaims, []byte("two"))
	if !queued {
		t.Fatal("the second body did not take the queue's one place")
	}
	third, queued := w.Put(bodyClaims, []byte("three"))
	if queued || third == "" {
		t.Fatalf("Put on a full queue = %q, %v; want a key and not queued", third, queued)
	}
	w.Put(bodyClaims, []byte("four")) // same burst: counted, not reported
	clock.Add(bodyReportEvery)
	fifth, _ := w.Put(bodyClaims, []byte("five")) // a new burst

	counted, reports := drops.snapshot()
	if counted[BodyQueueFull] != 3 {
		t.Errorf("queue_full counted %d times, want 3", counted[BodyQueueFull])
	}
	want := []BodyDrop{
		{SessionID: bodyClaims.SessionID, User: "alice", Role: "admin", Key: third, Reason: BodyQueueFull, Count: 1},
		{SessionID: bodyClaims.SessionID, User: "alice", Role: "admin", Key: fifth, Reason: BodyQueueFull, Count: 2},
	}
	if len(reports) != len(want) || reports[0] != want[0] || reports[1] != want[1] {
		t.Errorf("reports %+v\nwant %+v", reports, want)
	}

	close(st.release)
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{first, second} {
		if !st.Exists(context.Background(), key) {
			t.Errorf("queued body %s is not in storage", key)
		}
	}
	if st.Exists(context.Background(), third) {
		t.Errorf("dropped body %s is in storage", third)
	}
}

func TestBodyWriterStopDrainsEverythingQueued(t *testing.T) {
	st := newBlockingStorage(t)
	w := StartBodyWriter(&Records{storage: st}, BodyWriterConfig{})
	var keys []string
	for range 20 {
		key, queued := w.Put(bodyClaims, []byte("body"))
		if !queued {
			t.Fatal("dropped with room in the queue")
		}
		keys = append(keys, key)
	}
	<-st.stored
	stopped := make(chan error)
	go func() { stopped <- w.Stop(context.Background()) }()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while bodies still wait", err)
	case <-time.After(50 * time.Millisecond):
	}
	if key, queued := w.Put(bodyClaims, []byte("late")); queued {
		t.Errorf("Put after Stop queued %s", key)
	}
	close(st.release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		if !st.Exists(context.Background(), key) {
			t.Errorf("queued body %s is not in storage after Stop", key)
		}
	}
	if n := w.Waiting(); n != 0 {
		t.Errorf("%d bodies still waiting after Stop", n)
	}
}

func TestBodyWriterStopGivesUpAfterItsWait(t *testing.T) {
	st := newBlockingStorage(t)
	var drops dropLog
	w := StartBodyWriter(&Records{storage: st}, drops.config(newFakeClock(epoch)))
	for range 3 {
		w.Put(bodyClaims, []byte("body"))
	}
	<-st.stored
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := w.Stop(ctx)
	if err == nil || !strings.Contains(err.Error(), "3 recorded request bodies") {
		t.Fatalf("Stop = %v; want an error that counts the 3 bodies left", err)
	}
	close(st.release) // the hung write ends; the writer drops the two after it
	for deadline := time.Now().Add(5 * time.Second); w.Waiting() > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d bodies still waiting", w.Waiting())
		}
		time.Sleep(time.Millisecond)
	}
	if counted, _ := drops.snapshot(); counted[BodyStopped] != 2 {
		t.Errorf("counted %v, want 2 stopped", counted)
	}
}

func TestBodyWriterReportsStorageErrors(t *testing.T) {
	st := newBlockingStorage(t)
	st.fail = errors.New("disk full")
	close(st.release)
	var drops dropLog
	w := StartBodyWriter(&Records{storage: st}, drops.config(newFakeClock(epoch)))
	key, queued := w.Put(bodyClaims, []byte("body"))
	w.Put(bodyClaims, []byte("body"))
	if err := w.Stop(context.Background()); err != nil || !queued {
		t.Fatalf("Stop = %v, queued %v", err, queued)
	}
	counted, reports := drops.snapshot()
	if counted[BodyStorageError] != 2 || len(reports) != 2 {
		t.Fatalf("counted %v, reports %+v; want 2 storage errors, reported once and summed up at stop", counted, reports)
	}
	if r := reports[0]; r.Key != key || r.Reason != BodyStorageError || r.Count != 1 || r.Err == nil || !strings.Contains(r.Err.Error(), "disk full") {
		t.Errorf("first report %+v", r)
	}
	if r := reports[1]; r.Key != "" || r.Reason != BodyStorageError || r.Count != 1 {
		t.Errorf("summary at stop %+v; want the one drop the burst left unreported", r)
	}
}
