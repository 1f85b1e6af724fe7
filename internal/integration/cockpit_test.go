package integration

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// A real admin console behind the gate: Cockpit, the Linux server admin UI (Debian's
// cockpit-ws, cockpit-bridge and cockpit-system), in a real browser. Cockpit's pages
// get all their data over one WebSocket, /cockpit/socket, which the gate must let
// through under a session and close when the session ends.

// cockpitWS is Debian's cockpit-ws; the test is skipped only when it is missing.
const cockpitWS = "/usr/lib/cockpit/cockpit-ws"

// cockpit is a cockpit-ws the test started on a loopback port.
type cockpit struct {
	port int
	out  *syncBuffer
}

// startCockpit runs cockpit-ws on a free loopback port without TLS, systemd or a
// login: --local-session runs cockpit-bridge as the test's own user for every
// WebSocket. It is stopped (with its bridges) when the test ends. Nothing else is
// configured: Caddy's reverse_proxy passes the browser's Host on, and cockpit-ws
// accepts a WebSocket whose Origin is http://<that Host>, which the browser's is.
func startCockpit(t *testing.T) *cockpit {
	t.Helper()
	if _, err := os.Stat(cockpitWS); err != nil {
		t.Skipf("no Cockpit: %v (apt-get install cockpit-ws cockpit-bridge cockpit-system; .ci/run installs them)", err)
	}
	c := &cockpit{port: freePort(t), out: &syncBuffer{}}
	home := t.TempDir()
	cmd := exec.Command(cockpitWS, "--no-tls", "--address", "127.0.0.1", "--port", fmt.Sprint(c.port),
		"--local-session=cockpit-bridge")
	cmd.Dir = home
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_RUNTIME_DIR="+home, "LC_ALL=C.UTF-8")
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its bridges too, for the cleanup
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cockpitWS, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("cockpit-ws output:\n%s", c.out.String())
		}
	})
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("cockpit-ws exited during start-up; output:\n%s", c.out.String())
		default:
		}
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", c.port))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
			err = fmt.Errorf("GET / answered %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("cockpit-ws did not serve its page within 10 s (%v); output:\n%s", err, c.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wsWatch records the WebSockets of a tab as Chrome's DevTools network events report
// them.
type wsWatch struct {
	mu    sync.Mutex
	socks map[network.RequestID]*wsSeen
	order []network.RequestID
}

type wsSeen struct {
	URL       string
	Created   time.Time
	Handshake int64 // the HTTP status of the handshake's answer; 0 if none came
	Closed    time.Time
}

func (s wsSeen) String() string {
	closed := "open"
	if !s.Closed.IsZero() {
		closed = "closed " + s.Closed.Format("15:04:05.000")
	}
	return fmt.Sprintf("%s (created %s, handshake %d, %s)", s.URL, s.Created.Format("15:04:05.000"), s.Handshake, closed)
}

// watchWebSockets starts recording the tab's WebSockets.
func watchWebSockets(tb *chromeTab) *wsWatch {
	tb.t.Helper()
	w := &wsWatch{socks: map[network.RequestID]*wsSeen{}}
	err := chromedp.Listen(tb.ctx, func(ev any) {
		now := time.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventWebSocketCreated:
			w.socks[ev.RequestID] = &wsSeen{URL: ev.URL, Created: now}
			w.order = append(w.order, ev.RequestID)
		case *network.EventWebSocketHandshakeResponseReceived:
			if s := w.socks[ev.RequestID]; s != nil && ev.Response != nil {
				s.Handshake = ev.Response.Status
			}
		case *network.EventWebSocketClosed:
			if s := w.socks[ev.RequestID]; s != nil {
				s.Closed = now
			}
		}
	})
	if err != nil {
		tb.t.Fatalf("%s: listening to the network events: %v", tb.name, err)
	}
	return w
}

// all returns what was seen of every WebSocket, in the order they were created.
func (w *wsWatch) all() []wsSeen {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]wsSeen, 0, len(w.order))
	for _, id := range w.order {
		out = append(out, *w.socks[id])
	}
	return out
}

// cockpitView is what the test reads of Cockpit's page: the shell (navigation, host
// switcher, the "Disconnected" curtain) and the text of its page frames.
type cockpitView struct {
	URL    string `json:"url"`
	Ready  string `json:"ready"`
	Title  string `json:"title"`
	Shell  string `json:"shell"`
	Frames []struct {
		Name string `json:"name"`
		Text string `json:"text"`
	} `json:"frames"`
}

// frame returns the text of the frame whose name is name ("" if there is none).
func (v cockpitView) frame(name string) string {
	for _, f := range v.Frames {
		if f.Name == name {
			return f.Text
		}
	}
	return ""
}

func (v cockpitView) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s (title %q, %s); the shell says: %s", v.URL, v.Title, v.Ready, v.Shell)
	for _, f := range v.Frames {
		fmt.Fprintf(&sb, "; frame %s says: %s", f.Name, f.Text)
	}
	return sb.String()
}

// Cockpit's page frames are of its origin (the site's), so their text can be read.
const cockpitViewJS = `(() => {
	const norm = s => (s || '').replace(/\s+/g, ' ').trim();
	return {
		url: location.href,
		ready: document.readyState,
		title: document.title,
		shell: norm(document.body ? document.body.innerText : ''),
		frames: [...document.querySelectorAll('iframe')].map(f => {
			let text = '';
			try { text = norm(f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : ''); } catch (e) { text = 'unreadable: ' + e; }
			return {name: f.name || '', text: text};
		}),
	};
})()`

// waitCockpit polls Cockpit's page until ok says yes or within is over.
func waitCockpit(tb *chromeTab, within time.Duration, ok func(cockpitView) bool) (cockpitView, bool) {
	tb.t.Helper()
	deadline := time.Now().Add(within)
	var last cockpitView
	for {
		ctx, cancel := tb.step()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[cockpitView](cockpitViewJS))
		cancel()
		if err == nil {
			last = v
			if ok(v) {
				return v, true
			}
		}
		if time.Now().After(deadline) {
			return last, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cockpitUsage is the Overview's usage card once the bridge has sent its metrics, e.g.
// "CPU 3% of 2 CPUs Memory 1.2 / 24 GiB".
var cockpitUsage = regexp.MustCompile(`CPU \d+% of \d+ CPUs? Memory [\d.]+( [KMGT]?i?B)? / [\d.]+ [KMGT]iB`)

// TestCockpitBehindTheGate puts Cockpit behind basic_auth and `jit cockpit-admin` (a
// 20 s session) and uses it in headless Chromium: the protected URL sends alice to the
// activation page; with a real code she is back on Cockpit, whose Overview shows the
// machine's live data, which arrives only over Cockpit's WebSocket; the audit log has
// the session's access events, the WebSocket upgrade (101 on /cockpit/socket) among
// them. When the session expires the gate closes that WebSocket (Chrome sees it close
// within a few seconds, and Cockpit shows itself disconnected), and a reload goes
// back to the activation page. With JIT_SCREENSHOTS=DIR, Cockpit as it looks behind
// the gate is saved as DIR/cockpit.png.
func TestCockpitBehindTheGate(t *testing.T) {
	const (
		role        = "cockpit-admin"
		uri         = "/system"
		socketPath  = "/cockpit/socket"
		systemFrame = "cockpit1:localhost/system" // the frame of Cockpit's Overview page
	)
	ck := startCockpit(t)
	e := newEnv(t, envOptions{
		JitOptions: `
		role cockpit-admin {
			max_duration 20s
			default_duration 20s
			justification required 10
			eligible alice
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role, Upstream: fmt.Sprintf("127.0.0.1:%d", ck.port)}},
	})
	site := e.site(0)
	alice := e.enroll("alice")

	// What only Cockpit's bridge can tell, over the WebSocket: the machine's ID (read
	// from /etc/machine-id) and the user it runs as.
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	machineID := ""
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		machineID = strings.TrimSpace(string(b))
	}

	// Without a session, not even Cockpit's WebSocket handshake gets through.
	r := e.browser("alice").get(site+socketPath,
		withHeader("Connection", "Upgrade"), withHeader("Upgrade", "websocket"),
		withHeader("Sec-WebSocket-Version", "13"), withHeader("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
		withHeader("Origin", site))
	wantActivationRedirect(t, r, role, socketPath)

	c := newChrome(t, 70*time.Second)
	a := c.tab("alice", "alice", site)
	a.viewport(1280, 960, false, 1) // room for the Overview's system information
	ws := watchWebSockets(a)

	a.open(uri)
	a.wantActivationPage(role, uri, "alice opening Cockpit at "+uri)
	if got := a.value("Duration"); got != "20s" {
		t.Errorf("the duration preselected is %q, want the default_duration 20s", got)
	}
	if socks := ws.all(); len(socks) != 0 {
		t.Errorf("before activation the browser opened WebSockets: %v", socks)
	}
	a.typeInto("Justification", "checking the server in Cockpit")
	a.typeInto("Authenticator code", alice.next(t))
	if st := a.click("Activate " + role); st != http.StatusOK {
		t.Errorf("after activating, Cockpit's page answered %d, want 200", st)
	}
	cookie := a.sessionCookie()
	if cookie == nil {
		t.Fatalf("the browser holds no %s cookie after activation; it is on %s", cookieName, a.state().URL)
	}
	token := cookie.Value
	sid := sessionID(t, token)
	expiry := tokenExpiry(t, token)
	if left := time.Until(expiry); left > 21*time.Second || left < 10*time.Second {
		t.Fatalf("the session token expires in %s, want about 20 s", left.Round(time.Millisecond))
	}

	// Back on Cockpit, which renders its Overview from the bridge's answers.
	v, ok := waitCockpit(a, 15*time.Second, func(v cockpitView) bool {
		overview := v.frame(systemFrame)
		return strings.Contains(v.Shell, me.Username+"@") && cockpitUsage.MatchString(overview) &&
			(machineID == "" || strings.Contains(overview, "Machine ID "+machineID))
	})
	if !ok {
		t.Fatalf("Cockpit did not show its Overview with live data (the user %q@, CPU and memory usage, the machine ID %q) within 15 s of activation: %s",
			me.Username, machineID, v)
	}
	if v.URL != site+uri || v.Title == "" {
		t.Errorf("after activation the browser is on %s titled %q, want Cockpit at %s", v.URL, v.Title, site+uri)
	}
	overview := v.frame(systemFrame)
	t.Logf("Cockpit behind the gate (%s): %s", v.Title, overview)
	var socket wsSeen
	for _, s := range ws.all() {
		if s.URL == strings.Replace(site, "http://", "ws://", 1)+socketPath {
			socket = s
		}
	}
	if socket.URL == "" || socket.Handshake != http.StatusSwitchingProtocols || !socket.Closed.IsZero() {
		t.Fatalf("the browser has no open WebSocket to %s whose handshake was answered 101; its WebSockets: %v", socketPath, ws.all())
	}
	if dir := os.Getenv("JIT_SCREENSHOTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("JIT_SCREENSHOTS=%s: %v", dir, err)
		}
		t.Logf("screenshot: %s", saveShot(t, a, filepath.Join(dir, "cockpit.png")))
	}
	// Every request of Cockpit's page so far went through the gate under the session.
	e.waitEvent(match{"event": "activation_succeeded", "session_id": sid, "user": "alice", "role": role})
	e.waitEvent(match{"event": "access", "session_id": sid, "method": "GET", "uri": uri, "status": "200"})

	// The session ends: the gate closes Cockpit's WebSocket.
	sleepUntil(t, expiry, "until the 20 s session is over")
	const grace = 3 * time.Second
	deadline := time.Now().Add(grace)
	for {
		for _, s := range ws.all() {
			if s.Created.Equal(socket.Created) {
				socket = s
			}
		}
		if !socket.Closed.IsZero() || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	switch {
	case socket.Closed.IsZero():
		t.Errorf("Cockpit's WebSocket was still open %s after the session expired at %s: %v", grace, expiry.Format("15:04:05"), socket)
	case socket.Closed.Before(expiry):
		t.Errorf("Cockpit's WebSocket closed at %s, before the session expired at %s", socket.Closed.Format("15:04:05.000"), expiry.Format("15:04:05"))
	default:
		t.Logf("Cockpit's WebSocket closed %s after the session's expiry", socket.Closed.Sub(expiry).Round(time.Millisecond))
	}
	if v, ok := waitCockpit(a, 5*time.Second, func(v cockpitView) bool { return strings.Contains(v.Shell, "Disconnected") }); !ok {
		t.Errorf("Cockpit does not show itself disconnected after the session's expiry: %s", v)
	} else {
		t.Logf("Cockpit after the session's expiry: %s", v.Shell)
	}
	// The upgrade's access event is written when the WebSocket ends.
	if ev := e.waitEvent(match{"event": "access", "session_id": sid, "method": "GET", "uri": socketPath, "status": "101"}); ev != nil {
		t.Logf("the WebSocket's access event: %v", ev)
		// Everything Cockpit sent over the socket counts: its pages are many kilobytes.
		if n, err := strconv.Atoi(ev.str("bytes")); err != nil || n < 10000 {
			t.Errorf("the WebSocket's access event counts %q bytes, want the traffic it carried (≥ 10 000)", ev.str("bytes"))
		}
	}

	// A reload goes back to the activation page.
	denied := match{"event": "access_denied", "user": "alice", "uri": uri}
	deniedBefore := len(e.events(denied))
	a.reload()
	a.wantActivationPage(role, uri, "reloading Cockpit after the session's expiry")
	if n := len(e.events(denied)); n != deniedBefore+1 {
		t.Errorf("audit: %d access_denied events for alice on %s after the reload, want %d (one more than before it)", n, uri, deniedBefore+1)
	}
	for _, s := range ws.all() {
		if s.Handshake == http.StatusSwitchingProtocols && s.Created.After(socket.Created) {
			t.Errorf("after the session's expiry a WebSocket was opened and upgraded: %v", s)
		}
	}
}
