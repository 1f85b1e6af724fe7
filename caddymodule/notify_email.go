package caddymodule

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/smtp"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/random"
	"github.com/caddy-jit/caddy-jit/workflow"
)

// Notifications by e-mail: one message per event, over SMTP with STARTTLS (or implicit
// TLS), headers cleaned of control characters.

type emailTarget struct {
	smtp *SMTPConfig
	to   []string
}

func (e *emailTarget) String() string { return "email " + strings.Join(e.to, ",") }

// headerSafe keeps CR and LF (and every other control character) out of a header.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if printable.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

func (e *emailTarget) message(n workflow.Notification, now time.Time) []byte {
	var b bytes.Buffer
	subject := summaryHeadline(n)
	id := random.Hex(12)
	host := "caddy-jit.invalid"
	if at := strings.LastIndex(e.smtp.From, "@"); at >= 0 {
		host = strings.Trim(e.smtp.From[at+1:], "> ")
	}
	fmt.Fprintf(&b, "From: %s\r\n", headerSafe(e.smtp.From))
	fmt.Fprintf(&b, "To: %s\r\n", headerSafe(strings.Join(e.to, ", ")))
	fmt.Fprintf(&b, "Subject: %s\r\n", headerSafe(subject))
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", id, headerSafe(host))
	fmt.Fprintf(&b, "X-Jit-Event: %s\r\n", headerSafe(n.Event))
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	b.WriteString(summary(n))
	b.WriteString("\r\n\r\n")
	raw, _ := json.MarshalIndent(n, "", "  ")
	b.Write(bytes.ReplaceAll(raw, []byte("\n"), []byte("\r\n")))
	b.WriteString("\r\n")
	return b.Bytes()
}

func summaryHeadline(n workflow.Notification) string {
	tag := "[caddy-jit]"
	if n.BreakGlass || n.Event == workflow.NotifyBreakGlass {
		tag = "[caddy-jit BREAK-GLASS]"
	}
	return fmt.Sprintf("%s %s: %s, role %s", tag, n.Event, n.User, n.Role)
}

func (e *emailTarget) deliver(ctx context.Context, n workflow.Notification) error {
	cfg := e.smtp
	host, _, _ := net.SplitHostPort(cfg.Address)
	dialer := &net.Dialer{Timeout: notifyTimeout}
	var conn net.Conn
	var err error
	if cfg.TLS == "implicit" {
		conn, err = (&tls.Dialer{NetDialer: dialer, Config: &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}}).DialContext(ctx, "tcp", cfg.Address)
	} else {
		conn, err = dialer.DialContext(ctx, "tcp", cfg.Address)
	}
	if err != nil {
		return err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return err
	}
	if cfg.TLS == "" || cfg.TLS == "starttls" {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
				return err
			}
		} else if !isLoopbackHost(host) {
			return errors.New("the mail server offers no STARTTLS; set `tls none` in the smtp setting to send in clear")
		}
	}
	if cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", cfg.Username, cfg.Password, host)); err != nil {
			return err
		}
	}
	from := cfg.From
	if addr, err := parseAddress(from); err == nil {
		from = addr
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, to := range e.to {
		addr, err := parseAddress(to)
		if err != nil {
			return err
		}
		if err := c.Rcpt(addr); err != nil {
			return err
		}
	}
	wc, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := wc.Write(e.message(n, time.Now())); err != nil {
		wc.Close()
		return err
	}
	if err := wc.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseAddress returns the bare address of "Name <addr>" or "addr".
func parseAddress(s string) (string, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("%q is not an e-mail address", s)
	}
	return a.Address, nil
}
