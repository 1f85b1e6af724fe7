package audit

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// A session as an HTTP Archive (HAR 1.2, http://www.softwareishard.com/blog/har-12-spec/):
// the requests made under it, in a form that Chrome DevTools and every HAR viewer
// open. It holds what the audit log and the recorded bodies know: method, URL, status,
// sizes, times, the identity headers the upstream received, and the body of a
// mutating request where the role recorded it. Cookies and credentials never appear:
// the log holds none, and the HAR is built from the log alone.

// The identity headers the gate sets for the upstream (caddymodule), as a HAR shows
// them; X-Jit-Assertion, a signed credential, is left out on purpose.
const (
	harHeaderUser    = "X-Jit-User"
	harHeaderRole    = "X-Jit-Role"
	harHeaderSession = "X-Jit-Session"
)

// HAR is an HTTP Archive.
type HAR struct {
	Log HARLog `json:"log"`
}

// HARLog is the archive's log.
type HARLog struct {
	Version string     `json:"version"`
	Creator HARCreator `json:"creator"`
	Entries []HAREntry `json:"entries"`
	Comment string     `json:"comment,omitempty"`
}

// HARCreator names the program that wrote the archive.
type HARCreator struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// HAREntry is one request and its response.
type HAREntry struct {
	StartedDateTime string      `json:"startedDateTime"`
	Time            float64     `json:"time"`
	Request         HARRequest  `json:"request"`
	Response        HARResponse `json:"response"`
	Cache           struct{}    `json:"cache"`
	Timings         HARTimings  `json:"timings"`
	Comment         string      `json:"comment,omitempty"`
}

// HARRequest is a request as the upstream received it.
type HARRequest struct {
	Method      string       `json:"method"`
	URL         string       `json:"url"`
	HTTPVersion string       `json:"httpVersion"`
	Cookies     []HARHeader  `json:"cookies"`
	Headers     []HARHeader  `json:"headers"`
	QueryString []HARHeader  `json:"queryString"`
	PostData    *HARPostData `json:"postData,omitempty"`
	HeadersSize int64        `json:"headersSize"`
	BodySize    int64        `json:"bodySize"`
	Comment     string       `json:"comment,omitempty"`
}

// HARHeader is a name and a value: a header, a query parameter.
type HARHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HARPostData is a request's body, where the role recorded it.
type HARPostData struct {
	MimeType string      `json:"mimeType"`
	Params   []HARHeader `json:"params"`
	Text     string      `json:"text"`
	Comment  string      `json:"comment,omitempty"`
}

// HARResponse is the response the client received; the audit log keeps its status
// and size, not its headers or body.
type HARResponse struct {
	Status      int64       `json:"status"`
	StatusText  string      `json:"statusText"`
	HTTPVersion string      `json:"httpVersion"`
	Cookies     []HARHeader `json:"cookies"`
	Headers     []HARHeader `json:"headers"`
	Content     HARContent  `json:"content"`
	RedirectURL string      `json:"redirectURL"`
	HeadersSize int64       `json:"headersSize"`
	BodySize    int64       `json:"bodySize"`
}

// HARContent describes a response body that the archive does not hold.
type HARContent struct {
	Size     int64  `json:"size"`
	MimeType string `json:"mimeType"`
	Comment  string `json:"comment,omitempty"`
}

// HARTimings split an entry's time; the log knows only the whole.
type HARTimings struct {
	Send    float64 `json:"send"`
	Wait    float64 `json:"wait"`
	Receive float64 `json:"receive"`
}

// HAROptions say what the audit log does not: the origin the requests were made to
// (the log keeps path and query), and how to read a recorded body by its key (nil:
// bodies are not read).
type HAROptions struct {
	Origin  string
	Version string
	Body    func(key string) ([]byte, error)
}

// HAR builds the archive of the session's requests, oldest first.
func (s *Story) HAR(opts HAROptions) (*HAR, error) {
	origin, err := url.Parse(opts.Origin)
	if err != nil || (origin.Scheme != "http" && origin.Scheme != "https") || origin.Host == "" || (origin.Path != "" && origin.Path != "/") {
		return nil, fmt.Errorf("the origin %q is not a scheme and host such as https://console.example.com", opts.Origin)
	}
	identity := []HARHeader{{Name: harHeaderUser, Value: s.User}, {Name: harHeaderRole, Value: s.Role}, {Name: harHeaderSession, Value: s.SessionID}}
	h := &HAR{Log: HARLog{Version: "1.2", Creator: HARCreator{Name: "caddy-jit", Version: opts.Version},
		Entries: make([]HAREntry, 0, len(s.Accesses)),
		Comment: s.harComment()}}
	// Oldest first, as viewers show them, whatever the order of the log files given.
	accesses := slices.Clone(s.Accesses)
	slices.SortStableFunc(accesses, func(a, b StoryAccess) int { return a.started().Compare(b.started()) })
	for _, a := range accesses {
		h.Log.Entries = append(h.Log.Entries, harEntry(a, origin, identity, opts.Body))
	}
	return h, nil
}

// harComment sums the session up for the reviewer who opens the archive.
func (s *Story) harComment() string {
	var b strings.Builder
	fmt.Fprintf(&b, "caddy-jit session %s: %s as %s", s.SessionID, s.User, s.Role)
	if a := s.Activation; a != nil {
		fmt.Fprintf(&b, ", activated %s (justification %q", a.At.UTC().Format(time.RFC3339), a.Justification)
		if a.Ticket != "" {
			fmt.Fprintf(&b, ", ticket %q", a.Ticket)
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, "; ended: %s", s.End.How)
	if s.End.By != "" {
		fmt.Fprintf(&b, " by %s", s.End.By)
	}
	if !s.End.At.IsZero() {
		fmt.Fprintf(&b, " at %s", s.End.At.UTC().Format(time.RFC3339))
	}
	b.WriteString(". Responses' headers and bodies are not recorded; the origin is the one given to caddy jit audit session --origin.")
	return b.String()
}

// started is when the request began: the log's time is when it was answered.
func (a StoryAccess) started() time.Time {
	return a.At.Add(-time.Duration(a.DurationUS) * time.Microsecond)
}

func harEntry(a StoryAccess, origin *url.URL, identity []HARHeader, body func(string) ([]byte, error)) HAREntry {
	target, note := requestTarget(a)
	full := *origin
	full.Path, full.RawPath, full.RawQuery = target.Path, target.RawPath, target.RawQuery
	took := float64(a.DurationUS) / 1000
	started := a.started()
	req := HARRequest{Method: a.Method, URL: full.String(), HTTPVersion: "HTTP/1.1",
		Cookies: []HARHeader{}, Headers: identity, QueryString: queryOf(target), HeadersSize: -1, BodySize: 0, Comment: note}
	if a.BodyBytes != nil {
		req.BodySize = *a.BodyBytes
		req.PostData = harBody(a, body)
	}
	return HAREntry{
		StartedDateTime: started.UTC().Format(time.RFC3339Nano),
		Time:            took,
		Request:         req,
		Response: HARResponse{Status: a.Status, StatusText: http.StatusText(int(a.Status)), HTTPVersion: "HTTP/1.1",
			Cookies: []HARHeader{}, Headers: []HARHeader{}, Content: HARContent{Size: a.Bytes, MimeType: "x-unknown",
				Comment: "not recorded"}, RedirectURL: "", HeadersSize: -1, BodySize: a.Bytes},
		Timings: HARTimings{Send: 0, Wait: took, Receive: 0},
		Comment: "logged at " + a.Where,
	}
}

// requestTarget parses the access's URI, and says in note what the archive shows in
// its place where the log holds no whole request target: a URI the log cut (it keeps
// MaxFieldRunes characters, and may have cut inside a %XX escape), or one that does
// not parse. One such entry never costs the reviewer the rest of the archive.
func requestTarget(a StoryAccess) (target *url.URL, note string) {
	uri := a.URI
	if a.URILength > 0 {
		note = fmt.Sprintf("the URI is cut: the log keeps its first %d of %d characters", utf8.RuneCountInString(uri), a.URILength)
		if i := strings.LastIndexByte(uri, '%'); i >= 0 && i >= len(uri)-2 {
			uri = uri[:i] // a %XX escape the cut split
		}
	}
	if t, err := url.ParseRequestURI(uri); err == nil {
		return t, note
	}
	// Shown as text: every byte that would not stand in a URL escaped.
	path, query, _ := strings.Cut(uri, "?")
	t := &url.URL{Path: "/" + strings.TrimPrefix(path, "/")}
	if _, err := url.ParseQuery(query); err == nil {
		t.RawQuery = query
	}
	return t, strings.TrimPrefix(note+"; ", "; ") + fmt.Sprintf("the logged URI %q is not a request target, and is shown as a path", a.URI)
}

func queryOf(target *url.URL) []HARHeader {
	out := []HARHeader{}
	for _, pair := range strings.Split(target.RawQuery, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		name, err1 := url.QueryUnescape(k)
		value, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			name, value = k, v
		}
		out = append(out, HARHeader{Name: name, Value: value})
	}
	return out
}

// harBody is a mutating request's body as recorded: its text where it was recorded
// and is UTF-8, else a comment that says what is known of it.
func harBody(a StoryAccess, body func(string) ([]byte, error)) *HARPostData {
	p := &HARPostData{MimeType: a.BodyType, Params: []HARHeader{}}
	if p.MimeType == "" {
		p.MimeType = "application/octet-stream" // as RFC 9110 says a recipient may assume
	}
	described := fmt.Sprintf("%d bytes, SHA-256 %s", *a.BodyBytes, a.BodySHA256)
	switch {
	case a.BodyKey == "":
		p.Comment = "not recorded (the role does not record bodies): " + described
	case body == nil:
		p.Comment = "recorded at " + a.BodyKey + " in caddy-jit's storage; give --config to include it: " + described
	default:
		raw, err := body(a.BodyKey)
		switch {
		case err != nil:
			p.Comment = "recorded at " + a.BodyKey + ", but not readable: " + err.Error() + ": " + described
		case !utf8.Valid(withoutCutRune(raw, a)):
			p.Comment = fmt.Sprintf("recorded (%d bytes) but not text, so not shown: %s", len(raw), described)
		default:
			p.Text = string(withoutCutRune(raw, a))
			p.Comment = "as recorded: " + described
			if int64(len(raw)) < *a.BodyBytes || a.BodyIncomplete {
				p.Comment = fmt.Sprintf("the first %d bytes, as recorded (record_bodies keeps that many): %s", len(raw), described)
			}
		}
	}
	return p
}

// withoutCutRune drops the start of a character that record_bodies' byte limit cut
// in two, so that a text body cut there is still shown as text.
func withoutCutRune(raw []byte, a StoryAccess) []byte {
	if int64(len(raw)) >= *a.BodyBytes && !a.BodyIncomplete {
		return raw // whole
	}
	// The last character starts at most UTFMax-1 bytes from the end.
	for i := len(raw) - 1; i >= 0 && i >= len(raw)-(utf8.UTFMax-1); i-- {
		if !utf8.RuneStart(raw[i]) {
			continue
		}
		if !utf8.FullRune(raw[i:]) {
			return raw[:i] // a valid beginning, cut short
		}
		break
	}
	return raw
}
