package stepup

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// pausingStore holds the first write of one key until let go, after telling that it
// began: a failure's count read, not yet written back.
type pausingStore struct {
	*certmagic.FileStorage
	key     string
	once    sync.Once
	writing chan struct{}
	resume  chan struct{}
}

func (s *pausingStore) Store(ctx context.Context, key string, value []byte) error {
	if key == s.key {
		s.once.Do(func() {
			close(s.writing)
			<-s.resume
		})
	}
	return s.FileStorage.Store(ctx, key, value)
}

// A success racing a failure: the failure read the count (3) and is about to write 4
// when the success forgets the count. The success must wait for the write and then
// forget it, not delete first and have the write bring the count back: the next wrong
// code would then lock the user out as the fifth.
func TestSuccessForgetsFailuresCountedMeanwhile(t *testing.T) {
	ctx := context.Background()
	files := newStorage(t)
	st := &pausingStore{FileStorage: files, key: failuresKey("alice"), writing: make(chan struct{}), resume: make(chan struct{})}
	clock := newFakeClock(epoch.Add(10 * time.Second))
	enrollSecret(t, files, "alice", rfcSecret)
	plain := testAuthenticator(files, "test", clock.Now)
	for range 3 {
		clock.Add(30 * time.Second)
		if err := plain.Check(ctx, "alice", wrongCodeAt(t, rfcSecret, clock.Now())); err == nil {
			t.Fatal("a wrong code was accepted")
		}
	}
	a := testAuthenticator(st, "test", clock.Now)

	failed := make(chan error, 1)
	go func() { failed <- a.fail(ctx, "alice", clock.Now(), errors.New("wrong code")) }()
	<-st.writing
	forgot := make(chan error, 1)
	go func() { forgot <- a.succeeded(ctx, "alice") }()
	select {
	case err := <-forgot:
		t.Fatalf("the success forgot the failures (%v) while a failure was between reading and writing the count", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(st.resume)
	if err := <-failed; err == nil || errors.As(err, new(*LockedOutError)) {
		t.Fatalf("the fourth failure: %v, want a refusal short of a lockout", err)
	}
	if err := <-forgot; err != nil {
		t.Fatal(err)
	}
	if files.Exists(ctx, failuresKey("alice")) {
		t.Fatal("the failure written while the success waited outlived the success")
	}
	clock.Add(30 * time.Second)
	if err := plain.Check(ctx, "alice", wrongCodeAt(t, rfcSecret, clock.Now())); errors.As(err, new(*LockedOutError)) {
		t.Fatalf("one wrong code after a success locked alice out: %v", err)
	}
}
