package caddymodule

import (
	"net/url"
	"testing"
)

func TestSafeReturnKeepsOnlyPathsOnThisSite(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"/admin", "/admin"},
		{"/admin/page?x=1&y=%2F", "/admin/page?x=1&y=%2F"},
		{"/", "/"},
		{"/a//b", "/a//b"},
		{"", "/"},
		{"admin", "/"},
		{"//evil.example", "/"},
		{"//evil.example/path", "/"},
		{`/\evil.example`, "/"},
		{`\\evil.example`, "/"},
		{"/%2F/evil.example", "/"},
		{"/%2f%2fevil.example", "/"},
		{"/%5Cevil.example", "/"},
		{"/%5cevil.example", "/"},
		{"/%252F%252Fevil.example", "/"},
		{"/%255Cevil.example", "/"},
		{"/%2509/evil.example", "/"},
		{"/%25252F%25252F%25252Fevil", "/"},
		{"/100%25", "/100%25"},
		{"https://evil.example", "/"},
		{"http:evil.example", "/"},
		{"javascript:alert(1)", "/"},
		{"/\t/evil.example", "/"},
		{"/\n/evil.example", "/"},
		{"/\r/evil.example", "/"},
		{"/ /evil.example", "/"},
		{"/%09/evil.example", "/"},
		{"/%0a/evil.example", "/"},
		{"/%00", "/"},
		{"/%zz", "/"},
		{"/\x00", "/"},
		{"/é", "/"},
		{"/" + string(make([]byte, 3000)), "/"},
	}
	for _, tt := range tests {
		t.Run(url.QueryEscape(tt.in), func(t *testing.T) {
			if got := safeReturn(tt.in); got != tt.want {
				t.Errorf("safeReturn(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSafeReturnResultResolvesToThisOrigin(t *testing.T) {
	base, _ := url.Parse("https://console.example/some/page")
	for _, in := range []string{"/x", "//evil.example", `/\evil.example`, "/%2F%2Fevil.example", "/.%2e/x", "/a?b=//evil.example#//evil"} {
		u, err := base.Parse(safeReturn(in))
		if err != nil || u.Host != "console.example" || u.Scheme != "https" {
			t.Errorf("safeReturn(%q) resolves to %v", in, u)
		}
	}
}
