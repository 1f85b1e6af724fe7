package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// ---------------------------------------------------------------------------
// Artifacts of a failed test.

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// chromeArtifactsDir is where a failed browser test leaves its screenshots and HTML:
// $JIT_BROWSER_ARTIFACTS/TEST if set, else a new directory under the system's
// temporary directory (t.TempDir would be deleted with the test).
func chromeArtifactsDir(t *testing.T) (string, error) {
	name := unsafeFileChars.ReplaceAllString(t.Name(), "_")
	if base := os.Getenv("JIT_BROWSER_ARTIFACTS"); base != "" {
		dir := filepath.Join(base, name)
		return dir, os.MkdirAll(dir, 0o755)
	}
	return os.MkdirTemp(os.TempDir(), "caddy-jit-browser-"+name+"-")
}

// saveArtifacts writes, for each tab, a full-page screenshot (NAME.png) and the page's
// HTML as the browser holds it (NAME.html, with its URL in a first comment line), plus
// Chromium's output, and logs the directory.
func (c *chrome) saveArtifacts() {
	t := c.t
	dir, err := chromeArtifactsDir(t)
	if err != nil {
		t.Logf("browser artifacts: cannot make a directory for them: %v", err)
		return
	}
	var problems []string
	for _, tb := range c.tabs {
		file := unsafeFileChars.ReplaceAllString(tb.name, "_")
		ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
			problems = append(problems, fmt.Sprintf("%s: screenshot: %v", tb.name, err))
		} else if err := os.WriteFile(filepath.Join(dir, file+".png"), png, 0o644); err != nil {
			problems = append(problems, err.Error())
		}
		if doc, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`)); err != nil {
			problems = append(problems, fmt.Sprintf("%s: HTML: %v", tb.name, err))
		} else {
			page := "<!-- " + strings.ReplaceAll(loc, "--", "%2D%2D") + " -->\n" + doc
			if err := os.WriteFile(filepath.Join(dir, file+".html"), []byte(page), 0o644); err != nil {
				problems = append(problems, err.Error())
			}
		}
		cancel()
	}
	if err := os.WriteFile(filepath.Join(dir, "chromium-output.txt"), []byte(c.output.String()), 0o644); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		t.Logf("browser artifacts: some could not be saved: %s", strings.Join(problems, "; "))
	}
	t.Logf("browser artifacts (a screenshot and the HTML of each tab when the test failed): %s", dir)
}

// ---------------------------------------------------------------------------
// Accessibility and self-containment of a page.

// pageFacts are the facts about a page that the accessibility checks judge.
type pageFacts struct {
	URL   string `json:"url"`
	Lang  string `json:"lang"`
	Title string `json:"title"`
	H1    int    `json:"h1"`
	// Problems are controls without a label, duplicate ids, aria references to
	// nothing, and resources from another origin.
	Problems []string `json:"problems"`
	// Stylesheets counts the page's stylesheets that loaded with rules.
	Stylesheets int `json:"stylesheets"`
	// ScrollWidth > ClientWidth means the page scrolls sideways.
	ScrollWidth int `json:"scrollWidth"`
	ClientWidth int `json:"clientWidth"`
	// ErrorSummary is set when the page has #error-summary.
	ErrorSummary *struct {
		Role  string   `json:"role"`
		Links []string `json:"links"` // ids the summary links to (href="#id")
	} `json:"errorSummary"`
}

const pageFactsJS = `(() => {
	const problems = [];
	const norm = s => s.replace(/\s+/g, ' ').trim();
	const describe = el => '<' + el.tagName.toLowerCase() + (el.id ? ' id="' + el.id + '"' : '') + (el.name ? ' name="' + el.name + '"' : '') + '>';
	for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
		if (!el.id) { problems.push(describe(el) + ' has no id, so no label[for] can name it'); continue; }
		const labels = [...document.querySelectorAll('label')].filter(l => l.getAttribute('for') === el.id);
		if (labels.length !== 1) problems.push(describe(el) + ' has ' + labels.length + ' label[for] elements, want 1');
		else if (!norm(labels[0].textContent)) problems.push(describe(el) + "'s label is empty");
	}
	const ids = {};
	for (const el of document.querySelectorAll('[id]')) {
		if (ids[el.id]) problems.push('the id "' + el.id + '" is used twice');
		ids[el.id] = true;
	}
	for (const el of document.querySelectorAll('[aria-describedby], [aria-labelledby]')) {
		for (const a of ['aria-describedby', 'aria-labelledby']) {
			for (const id of (el.getAttribute(a) || '').split(/\s+/).filter(Boolean)) {
				if (!document.getElementById(id)) problems.push(describe(el) + ' has ' + a + '="' + id + '", which no element has as id');
			}
		}
	}
	const ours = u => u.protocol === 'data:' || u.origin === location.origin;
	for (const el of document.querySelectorAll('img, link, script, iframe, frame, source, video, audio, track, object, embed, input[type=image]')) {
		for (const a of ['src', 'href', 'data', 'srcset', 'poster']) {
			const v = el.getAttribute(a);
			if (!v) continue;
			for (const part of (a === 'srcset' ? v.split(',').map(s => s.trim().split(/\s+/)[0]) : [v])) {
				const u = new URL(part, document.baseURI);
				if (!ours(u)) problems.push(describe(el) + ' ' + a + '="' + v + '" is not on this origin nor data:');
			}
		}
	}
	for (const e of performance.getEntriesByType('resource')) {
		if (!ours(new URL(e.name))) problems.push('the page loaded ' + e.name + ', not from this origin');
	}
	let stylesheets = 0;
	for (const s of document.styleSheets) {
		try { if (s.cssRules.length > 0) stylesheets++; } catch (e) {}
	}
	const es = document.getElementById('error-summary');
	return {
		url: location.href,
		lang: document.documentElement.getAttribute('lang') || '',
		title: document.title,
		h1: document.querySelectorAll('h1').length,
		problems: problems,
		stylesheets: stylesheets,
		scrollWidth: document.documentElement.scrollWidth,
		clientWidth: document.documentElement.clientWidth,
		errorSummary: es ? {
			role: es.getAttribute('role') || '',
			links: [...es.querySelectorAll('a[href^="#"]')].map(a => decodeURIComponent(a.getAttribute('href').slice(1))),
		} : null,
	};
})()`

// facts reads the page's accessibility facts.
func (b *chromeTab) facts() pageFacts {
	b.t.Helper()
	return chromeEval[pageFacts](b, "reading the page's accessibility facts", pageFactsJS)
}

// wantAccessible checks what every caddy-jit page owes its readers: lang="en", a
// title and one h1, a label[for] for every control, aria references that resolve, its
// stylesheet loaded, and nothing loaded from another origin.
func (b *chromeTab) wantAccessible(what string) pageFacts {
	b.t.Helper()
	f := b.facts()
	if f.Lang != "en" {
		b.t.Errorf("%s (%s): <html lang=%q>, want lang=\"en\"", what, f.URL, f.Lang)
	}
	if !strings.HasSuffix(f.Title, "· caddy-jit") || strings.TrimSpace(strings.TrimSuffix(f.Title, "· caddy-jit")) == "" {
		b.t.Errorf("%s (%s): title %q, want \"WHAT · caddy-jit\"", what, f.URL, f.Title)
	}
	if f.H1 != 1 {
		b.t.Errorf("%s (%s): %d h1 elements, want 1", what, f.URL, f.H1)
	}
	for _, p := range f.Problems {
		b.t.Errorf("%s (%s): %s", what, f.URL, p)
	}
	if f.Stylesheets < 1 {
		b.t.Errorf("%s (%s): no stylesheet with rules loaded (the page's own /.jit/style.css should)", what, f.URL)
	}
	return f
}

// wantNoSidewaysScroll checks that the page fits the viewport's width (at a phone's
// 390 px: WCAG's reflow).
func (b *chromeTab) wantNoSidewaysScroll(what string) {
	b.t.Helper()
	f := b.facts()
	if f.ScrollWidth > f.ClientWidth {
		b.t.Errorf("%s (%s): the page is %d px wide in a %d px viewport: it scrolls sideways", what, f.URL, f.ScrollWidth, f.ClientWidth)
	}
}
