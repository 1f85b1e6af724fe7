package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// sessionCookie is the jit session cookie over plain HTTP.
const sessionCookie = "jit_session"

// enroll enrolls user through the admin API and returns the TOTP secret.
func enroll(ctx context.Context, client *http.Client, adminURL, user string) (string, error) {
	q := url.Values{"by": {"jitbench"}, "reason": {"benchmark"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, adminURL+"/jit/enrollments/"+url.PathEscape(user)+"?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("enrolling %s: %v", user, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("enrolling %s: POST /jit/enrollments/%s answered %s: %s", user, user, resp.Status, body)
	}
	var out struct {
		OTPAuthURI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", fmt.Errorf("enrolling %s: the answer is not JSON: %v: %s", user, err, body)
	}
	u, err := url.Parse(out.OTPAuthURI)
	if err != nil || u.Scheme != "otpauth" || u.Query().Get("secret") == "" {
		return "", fmt.Errorf("enrolling %s: %q is not an otpauth:// URI with a secret", user, out.OTPAuthURI)
	}
	return u.Query().Get("secret"), nil
}

var csrfInput = regexp.MustCompile(`<input type="hidden" name="csrf" value="([^"]*)">`)

// activate opens the activation form as the basic_auth user, posts it with a real TOTP
// code and returns the session token from the Set-Cookie of the 303.
func activate(ctx context.Context, client *http.Client, site, user, pass, role, secret string) (string, error) {
	form := url.Values{"role": {role}, "return": {"/"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, site+"/.jit/activate?"+form.Encode(), nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(user, pass)
	page, status, _, err := fetch(client, req)
	if err != nil {
		return "", fmt.Errorf("opening the activation form: %v", err)
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("opening the activation form: want 200, got %d: %.400s", status, page)
	}
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		return "", fmt.Errorf("the activation form has no csrf input: %.400s", page)
	}
	code, err := totp.GenerateCodeCustom(secret, time.Now(), totp.ValidateOpts{
		Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1,
	})
	if err != nil {
		return "", fmt.Errorf("computing the TOTP code: %v", err)
	}
	form.Set("csrf", html.UnescapeString(m[1]))
	form.Set("code", code)
	form.Set("duration", sessionLength.String())
	form.Set("justification", "jitbench: measuring the gate's overhead")
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, site+"/.jit/activate", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(user, pass)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	body, status, header, err := fetch(client, req)
	if err != nil {
		return "", fmt.Errorf("posting the activation form: %v", err)
	}
	if status != http.StatusSeeOther {
		return "", fmt.Errorf("posting the activation form: want 303, got %d: %.600s", status, body)
	}
	for _, c := range (&http.Response{Header: header}).Cookies() {
		if c.Name == sessionCookie && c.Value != "" {
			return c.Value, nil
		}
	}
	return "", fmt.Errorf("the activation answered 303 without a %s cookie (Set-Cookie %q)", sessionCookie, header.Values("Set-Cookie"))
}

// fetch does req and returns the body (at most 1 MiB), status and header.
func fetch(client *http.Client, req *http.Request) (string, int, http.Header, error) {
	resp, err := client.Do(req)
	if err != nil {
		return "", 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(body), resp.StatusCode, resp.Header, err
}
