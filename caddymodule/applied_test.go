package caddymodule

import (
	"slices"
	"testing"
	"time"
)

// The words of the instances that applied revocations: an instance is missing until
// it applied every one of the ids, a new word wakes a waiter, and words older than
// ackMemory are forgotten.
func TestAcksTellWhoIsMissing(t *testing.T) {
	var k acks
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	missing, changed := k.missing([]string{"b", "c"}, []string{"s1"})
	if !slices.Equal(missing, []string{"b", "c"}) {
		t.Fatalf("before any word: missing %v, want b and c", missing)
	}
	k.add("b", "s1", at)
	select {
	case <-changed:
	default:
		t.Fatal("a word did not wake the waiter")
	}
	for _, tt := range []struct {
		instances, ids, want []string
	}{
		{[]string{"b", "c"}, []string{"s1"}, []string{"c"}},
		{[]string{"b"}, []string{"s1"}, nil},
		{[]string{"b"}, []string{"s1", "s2"}, []string{"b"}},
		{nil, []string{"s1"}, nil},
	} {
		if got, _ := k.missing(tt.instances, tt.ids); !slices.Equal(got, tt.want) {
			t.Errorf("missing(%v, %v) = %v, want %v", tt.instances, tt.ids, got, tt.want)
		}
	}
	k.add("c", "s2", at.Add(ackMemory+time.Second))
	if got, _ := k.missing([]string{"b"}, []string{"s1"}); !slices.Equal(got, []string{"b"}) {
		t.Errorf("a word older than ackMemory is still held: missing %v, want b", got)
	}
}
