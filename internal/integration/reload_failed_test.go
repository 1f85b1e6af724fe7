package integration

import (
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// reloadFails has Caddy load the Caddyfile as change leaves it, and wants the load
// refused; the Caddyfile on disk is the running one again after. It returns what
// `caddy reload` said.
func (e *env) reloadFails(change func(*caddyfileData)) string {
	t := e.t
	t.Helper()
	running := e.data
	running.Sites = slices.Clone(e.data.Sites)
	change(&e.data)
	e.writeCaddyfile()
	defer func() {
		e.data = running
		e.writeCaddyfile()
	}()
	out, err := e.reloadCommand().CombinedOutput()
	if err == nil {
		t.Fatalf("caddy reload of a config that cannot run succeeded:\n%s", out)
	}
	return string(out)
}

// A reload that fails leaves the running config in force, whether the new config
// failed to provision (its jit app was provisioned, another module then failed) or to
// start (its jit app started, then the http app could not listen, and Caddy stopped
// what had started). Here the running config syncs revocations every second and the
// failed ones every hour: a session revoked on another instance must still be refused
// within a second or two, its session_ended must reach the running config's audit
// log, and the admin API must still answer.
func TestFailedReloadLeavesTheRunningConfigInForce(t *testing.T) {
	a, b := newCluster(t, syncOptions)
	startTogether(a, b)
	alice := a.enroll("alice")
	ba := a.browser("alice")
	token := ba.mustActivate(a.site(0), roleAdmin, adminURI, alice, nil)
	sid := sessionID(t, token)
	wantStatus(t, useToken(ba, b.site(0), "alice", token), http.StatusOK, "the session on B")

	const hourly = "\t\tsync_interval 1h\n\t\tmax_staleness 2h"
	out := b.reloadFails(func(d *caddyfileData) {
		d.JitOptions = hourly
		d.Sites[0].Proxy = "\t\ttransport http {\n\t\t\ttls_trust_pool file /nonexistent/ca.pem\n\t\t}"
	})
	if !strings.Contains(out, "ca.pem") {
		t.Fatalf("the reload failed, but not for the missing CA file:\n%s", out)
	}

	// Caddy starts a config's apps in no set order: the jit app starts before the
	// http app fails about every other time. Caddy then stops it, which is what this
	// tries, until B's log says it happened.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	const gaveBack = "this config stopped before the config it was to replace"
	for try := 1; !strings.Contains(b.logs.String(), gaveBack); try++ {
		if try > 30 {
			t.Fatalf("in 30 reloads that failed to start, B never logged %q; the log's tail:\n%s", gaveBack, b.logTail(20))
		}
		out := b.reloadFails(func(d *caddyfileData) {
			d.JitOptions = hourly
			d.Sites = append(d.Sites, siteSpec{Port: taken.Addr().(*net.TCPAddr).Port, Bind: "127.0.0.1", Jit: "\tjit " + roleAdmin})
		})
		if !strings.Contains(out, "address already in use") {
			t.Fatalf("the reload failed, but not for the port in use:\n%s", out)
		}
	}

	wantStatus(t, useToken(ba, b.site(0), "alice", token), http.StatusOK, "the session on B after the failed reloads")
	if ss := b.sessions(""); len(ss) != 1 || ss[0].ID != sid {
		t.Errorf("after the failed reloads B's admin API lists %+v, want the session %s", ss, sid)
	}
	a.revoke(sid)
	start := time.Now()
	if !pollUntil(2*time.Second+slack, func() bool {
		return useToken(ba, b.site(0), "alice", token).StatusCode == http.StatusFound
	}) {
		t.Fatalf("B still admits the session %s %s after A revoked it: the failed config's hourly sync is in force", sid, time.Since(start).Round(time.Millisecond))
	}
	wantSessionEnded(t, b, sid, "revoked", "integration", 5*time.Second)
}
