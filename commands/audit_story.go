package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/caddymodule"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/privatefile"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/session"
)

// caddy jit audit session and caddy jit report: one session's story, and the periodic
// report, printed for people or as JSON.

// cmdAuditSession runs `caddy jit audit session`.
func cmdAuditSession(stdout, _ io.Writer, fl caddycmd.Flags) (int, error) {
	args := fl.Args()
	if len(args) < 2 || args[0] == "" {
		return auditExitError, errors.New("want a session id and the audit log files: caddy jit audit session <id> <file>…")
	}
	id := args[0]
	inputs, err := auditInputs(args[1:])
	if err != nil {
		return auditExitError, err
	}
	story, err := audit.SessionStory(inputs, id, now())
	if errors.Is(err, audit.ErrSessionNotInLog) {
		return auditExitFinding, fmt.Errorf("no event of session %s in %s", strconv.Quote(id), printable.String(strings.Join(args[1:], ", ")))
	}
	if err != nil {
		return auditExitError, err
	}
	if harFile := fl.String("har"); harFile != "" {
		if err := writeSessionHAR(fl, story, harFile); err != nil {
			return auditExitError, err
		}
		_, err := fmt.Fprintf(stdout, "Wrote %s: %d requests of session %s (HTTP Archive 1.2).\n", printable.String(harFile), len(story.Accesses), printable.String(story.SessionID))
		return auditExitOK, err
	}
	if fl.Bool("json") {
		err = printJSON(stdout, story)
	} else {
		err = writeAuditStory(stdout, story)
	}
	if err != nil {
		return auditExitError, err
	}
	return auditExitOK, nil
}

// moduleVersion is caddy-jit's version as built into this binary ("(devel)" when it
// is the main module of a local build).
func moduleVersion() string {
	const path = "github.com/caddy-jit/caddy-jit"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if bi.Main.Path == path {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			return d.Version
		}
	}
	return "unknown"
}

// writeSessionHAR writes the session's requests as an HTTP Archive to file (mode
// 0600: it may hold recorded request bodies), with the bodies recorded in the
// storage of --config when it is given.
func writeSessionHAR(fl caddycmd.Flags, story *audit.Story, file string) error {
	opts := audit.HAROptions{Origin: fl.String("origin"), Version: moduleVersion()}
	cfg, configFile, err := flaggedConfig(fl)
	if err != nil {
		return err
	}
	if cfg != nil {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		app, err := caddymodule.LoadApp(cfg)
		if err != nil && !errors.Is(err, caddymodule.ErrNoApp) {
			return fmt.Errorf("in %s: %v", configFile, err)
		}
		st, _, err := configuredStore(ctx, cfg, app)
		if err != nil {
			return fmt.Errorf("opening the storage of %s: %v", configFile, err)
		}
		records := session.RecordsOn(st)
		opts.Body = func(key string) ([]byte, error) { return records.LoadBody(ctx, key) }
	}
	h, err := story.HAR(opts)
	if err != nil {
		return fmt.Errorf("--origin: %v", err)
	}
	// Recorded bodies may hold what the session changed: the archive is its owner's alone.
	return privatefile.Write(file, "HAR file", func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(h)
	})
}

// quoted shows free text users typed: quoted, with anything a terminal would act on
// escaped.

func writeAuditStory(w io.Writer, s *audit.Story) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Session %s: %s as %s\n", printable.String(s.SessionID), printable.String(s.User), printable.String(s.Role))
	if r := s.Request; r != nil {
		if r.RequestedAt.IsZero() {
			fmt.Fprintf(&b, "\nRequested  (request %s: its request is not in these files)\n", printable.String(r.RequestID))
		} else {
			fmt.Fprintf(&b, "\nRequested  %s from %s, request %s (%s)\n", auditClock(r.RequestedAt), printable.String(r.ClientIP), printable.String(r.RequestID), printable.String(r.Where))
			fmt.Fprintf(&b, "  for %s, %d approvals needed by %s: %s\n", printable.String(r.Duration), r.ApprovalsNeeded, auditClock(r.Deadline), strconv.Quote(r.Justification))
		}
		for _, d := range r.Decisions {
			verb := "denied  "
			if d.Approved {
				verb = "approved"
			}
			fmt.Fprintf(&b, "  %s %s by %s from %s: %s\n", verb, auditClock(d.At), printable.String(d.By), printable.String(d.ClientIP), strconv.Quote(d.Comment))
		}
	}
	if a := s.Activation; a != nil {
		bg := ""
		if a.BreakGlass {
			bg = ", BREAK-GLASS"
		}
		fmt.Fprintf(&b, "\nActivated  %s from %s%s (%s)\n", auditClock(a.At), printable.String(a.ClientIP), bg, printable.String(a.Where))
		fmt.Fprintf(&b, "  why:     %s\n", strconv.Quote(a.Justification))
		if a.Ticket != "" {
			fmt.Fprintf(&b, "  ticket:  %s\n", printable.String(a.Ticket))
		}
		fmt.Fprintf(&b, "  from %s to %s (%s)\n", auditClock(a.Start), auditClock(a.Expires), printable.String(a.Duration))
		if len(a.Approvers) > 0 {
			names := make([]string, len(a.Approvers))
			for i, n := range a.Approvers {
				names[i] = printable.String(n)
			}
			fmt.Fprintf(&b, "  approved by %s\n", strings.Join(names, ", "))
		}
	} else {
		b.WriteString("\nActivated  (not in these files: it is in an older file)\n")
	}
	for _, e := range s.Extensions {
		fmt.Fprintf(&b, "Extended   %s from %s: to %s (was %s): %s\n", auditClock(e.At), printable.String(e.ClientIP), auditClock(e.To), auditClock(e.From), strconv.Quote(e.Justification))
	}
	for _, f := range s.Failures {
		fmt.Fprintf(&b, "Refused    %s %s: %s (%s)\n", auditClock(f.At), printable.String(f.Event), printable.String(f.Reason), printable.String(f.Where))
	}
	fmt.Fprintf(&b, "\nRequests (%d):\n", len(s.Accesses))
	if len(s.Accesses) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  TIME\tMETHOD\tURI\tSTATUS\tBYTES\tBODY SHA-256")
		for _, a := range s.Accesses {
			body := "-"
			if a.BodySHA256 != "" {
				body = printable.String(a.BodySHA256)
				if a.BodyBytes != nil {
					body += " (" + strconv.FormatInt(*a.BodyBytes, 10) + " bytes"
					if a.BodyIncomplete {
						body += ", incomplete"
					}
					body += ")"
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%s\n", auditClock(a.At), printable.String(a.Method), printable.String(a.URI), a.Status, a.Bytes, body)
		}
		tw.Flush()
	}
	b.WriteString("\n")
	switch e := s.End; e.How {
	case audit.EndDeactivated, audit.EndRevoked, audit.EndReplaced:
		how := e.How
		if e.LocalOnly {
			how += " on one instance only (storage was unreachable)"
		}
		fmt.Fprintf(&b, "Ended      %s: %s by %s: %s (%s)\n", auditClock(e.At), how, printable.String(e.By), strconv.Quote(e.Reason), printable.String(e.Where))
	case audit.EndExpired:
		fmt.Fprintf(&b, "Ended      %s: expired\n", auditClock(e.At))
	case audit.EndActive:
		fmt.Fprintf(&b, "Active     until %s\n", auditClock(e.At))
	default:
		b.WriteString("Ended      unknown (no expiry in these files)\n")
	}
	t := s.Totals
	statuses := ""
	if classes := byClass(t.Statuses); classes != "" {
		statuses = " (" + classes + ")"
	}
	fmt.Fprintf(&b, "Totals     %s, %s%s, elevated %s\n", words.Plural(t.Requests, "request"), words.Plural(t.Bytes, "byte"), statuses, t.Elevated)
	for _, c := range s.Closed {
		complete := "complete: every request it counts is in these files"
		if !c.Complete {
			complete = "INCOMPLETE: these files hold a different number of its requests"
		}
		accessed := ""
		if !c.First.IsZero() {
			accessed = fmt.Sprintf(", first %s, last %s", auditClock(c.First), auditClock(c.Last))
		}
		statuses := ""
		if classes := byClass(c.Statuses); classes != "" {
			statuses = "; " + classes
		}
		fmt.Fprintf(&b, "Closed     %s on %s: %s, %s (%d mutating%s), %s in, %s out%s; %s (%s)\n", auditClock(c.At), printable.String(c.Instance),
			printable.String(c.How), words.Plural(c.Requests, "request"), c.Mutating, statuses, words.Plural(c.BytesIn, "byte"), words.Plural(c.BytesOut, "byte"),
			accessed, complete, printable.String(c.Where))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cmdReport runs `caddy jit report`.
func cmdReport(stdout, _ io.Writer, fl caddycmd.Flags) (int, error) {
	files := fl.Args()
	if len(files) == 0 {
		return auditExitError, errors.New("no audit log file: caddy jit report <file>… (rotated files first)")
	}
	since, err := caddy.ParseDuration(fl.String("since"))
	if err != nil || since <= 0 {
		return auditExitError, fmt.Errorf("--since %s is not a positive duration such as 30d, 7d or 12h", strconv.Quote(fl.String("since")))
	}
	noisy, err := fl.GetInt("noisy")
	if err != nil || noisy < 1 {
		return auditExitError, errors.New("--noisy must be a number of activations, at least 1")
	}
	cfg, configFile, err := flaggedConfig(fl)
	if err != nil {
		return auditExitError, err
	}
	opts := audit.ReportOptions{Noisy: noisy}
	if cfg != nil {
		app, err := loadApp(cfg, configFile, "no roles to report on")
		if err != nil {
			return auditExitError, err
		}
		opts.Roles = app.PolicyRoles()
	}
	inputs, err := auditInputs(files)
	if err != nil {
		return auditExitError, err
	}
	rep, err := audit.Summarize(inputs, since, now(), opts)
	if err != nil {
		return auditExitError, err
	}
	if fl.Bool("json") {
		err = printJSON(stdout, rep)
	} else {
		err = writeAuditReport(stdout, rep, fl.String("since"))
	}
	if err != nil {
		return auditExitError, err
	}
	if len(rep.Alerts) > 0 {
		return auditExitFinding, fmt.Errorf("%s to review", words.Plural(len(rep.Alerts), "alert"))
	}
	return auditExitOK, nil
}

func writeAuditReport(w io.Writer, rep *audit.Report, since string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "caddy-jit report, %s – %s (%s): %s, %s.\n", words.Time(rep.From), words.Time(rep.To), printable.String(since),
		words.Plural(len(rep.Files), "file"), words.Plural(rep.Events, "event"))
	b.WriteString("\n")
	if len(rep.Rows) == 0 {
		b.WriteString("No activation or request in the period.\n")
	} else {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ROLE\tUSER\tACTIVATIONS\tBREAK-GLASS\tELEVATED\tREQUESTS\tLAST USE")
		for _, r := range rep.Rows {
			last := "-"
			if !r.LastUse.IsZero() {
				last = words.Time(r.LastUse)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%s\n", cell(r.Role), cell(r.User), r.Activations, r.BreakGlass, r.Elevated, r.Requests, last)
		}
		tw.Flush()
	}
	b.WriteString("\n")
	if len(rep.Alerts) == 0 {
		b.WriteString("No alerts.\n")
	} else {
		fmt.Fprintf(&b, "%s:\n", words.Plural(len(rep.Alerts), "alert"))
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		for _, a := range rep.Alerts {
			at, where := "-", ""
			if !a.At.IsZero() {
				at = words.Time(a.At)
			}
			if a.Where != "" {
				where = " (" + printable.String(a.Where) + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s%s\n", at, a.Kind, printable.String(a.Message), where)
		}
		tw.Flush()
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "Note: %s.\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// byClass shows response counts by status class, "2xx 3, 4xx 1", or "" for none.
func byClass(statuses map[string]int64) string {
	var classes []string
	for _, c := range audit.StatusClasses {
		if n := statuses[c]; n > 0 {
			classes = append(classes, fmt.Sprintf("%s %d", c, n))
		}
	}
	return strings.Join(classes, ", ")
}
