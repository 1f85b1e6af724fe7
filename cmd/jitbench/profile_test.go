package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCaptureProfile(t *testing.T) {
	var asked string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.RequestURI()
		if r.URL.Path != "/debug/pprof/profile" {
			http.Error(w, "no such endpoint", http.StatusNotFound)
			return
		}
		w.Write([]byte("profile bytes"))
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "B-16.pprof")

	if err := startProfile(context.Background(), srv.URL, path, time.Millisecond, 3*time.Second).wait(); err != nil {
		t.Fatal(err)
	}
	if asked != "/debug/pprof/profile?seconds=3" {
		t.Errorf("asked for %q, want the measured window in seconds", asked)
	}
	if got, _ := os.ReadFile(path); string(got) != "profile bytes" {
		t.Errorf("profile file holds %q", got)
	}

	err := startProfile(context.Background(), srv.URL+"/elsewhere", path, 0, time.Second).wait()
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a failing endpoint gave %v, want an error naming the 404", err)
	}
}
