package policy

import (
	"strings"
	"testing"
	"time"
)

func TestActivation(t *testing.T) {
	alice := Caller{User: "alice"}
	base := func() *Role {
		return &Role{
			Name:                   "console-admin",
			MaxDuration:            time.Hour,
			DefaultDuration:        15 * time.Minute,
			JustificationMinLength: 10,
			Ticket:                 ticketPattern(`INC-[0-9]+`),
			TicketFormat:           `INC-[0-9]+`,
			Eligibility:            []Eligibility{{Subjects: []string{"alice"}, Until: feb1}},
		}
	}
	ok := Request{Caller: alice, Duration: 15 * time.Minute, Justification: "restart the stuck queue", Ticket: "INC-42"}
	with := func(change func(*Request)) Request {
		r := ok
		change(&r)
		return r
	}
	tests := []struct {
		name        string
		role        func(*Role)
		req         Request
		wantReason  Reason
		wantMessage string // checked when not empty
	}{
		{name: "all good", req: ok, wantReason: ReasonAllowed},
		{
			name:        "not eligible comes first",
			req:         with(func(r *Request) { r.Caller = Caller{User: "mallory"}; r.Duration = -1; r.Justification = "" }),
			wantReason:  ReasonNotEligible,
			wantMessage: "mallory is not eligible for the role console-admin",
		},
		{
			name:        "eligibility ended",
			role:        func(r *Role) { r.Eligibility[0].Until = t0 },
			req:         ok,
			wantReason:  ReasonNotEligible,
			wantMessage: "alice's eligibility for the role console-admin ended at 2026-01-15T12:00:00Z",
		},

		// Duration.
		{name: "zero duration", req: with(func(r *Request) { r.Duration = 0 }), wantReason: ReasonDurationInvalid, wantMessage: "the duration must be positive"},
		{name: "negative duration", req: with(func(r *Request) { r.Duration = -time.Minute }), wantReason: ReasonDurationInvalid},
		{name: "duration checked before justification", req: with(func(r *Request) { r.Duration = 0; r.Justification = "" }), wantReason: ReasonDurationInvalid},
		{name: "exactly the maximum", req: with(func(r *Request) { r.Duration = time.Hour }), wantReason: ReasonAllowed},
		{name: "one nanosecond", req: with(func(r *Request) { r.Duration = time.Nanosecond }), wantReason: ReasonAllowed},
		{
			name:        "one nanosecond over the maximum",
			req:         with(func(r *Request) { r.Duration = time.Hour + time.Nanosecond }),
			wantReason:  ReasonDurationTooLong,
			wantMessage: "the role console-admin can be activated for at most 1h",
		},
		{
			name:        "too long, maximum with minutes",
			role:        func(r *Role) { r.MaxDuration = 90 * time.Minute },
			req:         with(func(r *Request) { r.Duration = 2 * time.Hour }),
			wantReason:  ReasonDurationTooLong,
			wantMessage: "the role console-admin can be activated for at most 1h30m",
		},

		// Justification, required with at least 10 characters.
		{name: "justification missing", req: with(func(r *Request) { r.Justification = "" }), wantReason: ReasonJustificationMissing, wantMessage: "a justification is required"},
		{name: "justification only spaces", req: with(func(r *Request) { r.Justification = " \t\r\n " }), wantReason: ReasonJustificationMissing},
		{
			name:        "justification 9 characters",
			req:         with(func(r *Request) { r.Justification = "123456789" }),
			wantReason:  ReasonJustificationTooShort,
			wantMessage: "the justification is too short: at least 10 characters are required",
		},
		{name: "justification 9 characters padded with spaces", req: with(func(r *Request) { r.Justification = "   123456789   " }), wantReason: ReasonJustificationTooShort},
		{name: "justification exactly 10 characters", req: with(func(r *Request) { r.Justification = "1234567890" }), wantReason: ReasonAllowed},
		{name: "justification 9 two-byte runes (18 bytes) is too short", req: with(func(r *Request) { r.Justification = strings.Repeat("é", 9) }), wantReason: ReasonJustificationTooShort},
		{name: "justification 10 two-byte runes", req: with(func(r *Request) { r.Justification = strings.Repeat("é", 10) }), wantReason: ReasonAllowed},
		{name: "justification 5 four-byte runes (20 bytes) is too short", req: with(func(r *Request) { r.Justification = strings.Repeat("🔥", 5) }), wantReason: ReasonJustificationTooShort},
		{name: "justification at the maximum", req: with(func(r *Request) { r.Justification = strings.Repeat("x", MaxJustificationLength) }), wantReason: ReasonAllowed},
		{name: "justification at the maximum in three-byte runes", req: with(func(r *Request) { r.Justification = strings.Repeat("€", MaxJustificationLength) }), wantReason: ReasonAllowed},
		{
			name:        "justification one over the maximum",
			req:         with(func(r *Request) { r.Justification = strings.Repeat("x", MaxJustificationLength+1) }),
			wantReason:  ReasonJustificationTooLong,
			wantMessage: "the justification is too long: at most 1000 characters",
		},
		{name: "justification one rune over the maximum in multibyte runes", req: with(func(r *Request) { r.Justification = strings.Repeat("€", MaxJustificationLength+1) }), wantReason: ReasonJustificationTooLong},

		// Justification optional.
		{name: "optional justification may be empty", role: func(r *Role) { r.JustificationMinLength = 0 }, req: with(func(r *Request) { r.Justification = "" }), wantReason: ReasonAllowed},
		{name: "optional justification may be short", role: func(r *Role) { r.JustificationMinLength = 0 }, req: with(func(r *Request) { r.Justification = "x" }), wantReason: ReasonAllowed},
		{name: "optional justification still bounded", role: func(r *Role) { r.JustificationMinLength = 0 }, req: with(func(r *Request) { r.Justification = strings.Repeat("x", MaxJustificationLength+1) }), wantReason: ReasonJustificationTooLong},
		{name: "justification checked before ticket", req: with(func(r *Request) { r.Justification = ""; r.Ticket = "" }), wantReason: ReasonJustificationMissing},

		// Ticket, required, ^(?:INC-[0-9]+)$.
		{name: "ticket missing", req: with(func(r *Request) { r.Ticket = "" }), wantReason: ReasonTicketInvalid, wantMessage: "a ticket reference is required"},
		{name: "ticket only spaces", req: with(func(r *Request) { r.Ticket = "   " }), wantReason: ReasonTicketInvalid, wantMessage: "a ticket reference is required"},
		{name: "ticket with surrounding spaces", req: with(func(r *Request) { r.Ticket = "  INC-7 " }), wantReason: ReasonAllowed},
		{
			name:        "ticket with a prefix",
			req:         with(func(r *Request) { r.Ticket = "xINC-42" }),
			wantReason:  ReasonTicketInvalid,
			wantMessage: `the ticket reference "xINC-42" does not have the expected form (INC-[0-9]+)`,
		},
		{name: "ticket with a suffix", req: with(func(r *Request) { r.Ticket = "INC-42x" }), wantReason: ReasonTicketInvalid},
		{name: "ticket with a newline suffix", req: with(func(r *Request) { r.Ticket = "INC-42\nINC-43" }), wantReason: ReasonTicketInvalid},
		{name: "ticket with no number", req: with(func(r *Request) { r.Ticket = "INC-" }), wantReason: ReasonTicketInvalid},
		{name: "ticket in the wrong case", req: with(func(r *Request) { r.Ticket = "inc-42" }), wantReason: ReasonTicketInvalid},
		{name: "ticket at the maximum length", req: with(func(r *Request) { r.Ticket = "INC-" + strings.Repeat("9", MaxTicketLength-4) }), wantReason: ReasonAllowed},
		{
			name:        "ticket one byte over the maximum length, though it matches",
			req:         with(func(r *Request) { r.Ticket = "INC-" + strings.Repeat("9", MaxTicketLength-3) }),
			wantReason:  ReasonTicketInvalid,
			wantMessage: `the ticket reference "INC-999999999999999999999999999999999999…" does not have the expected form (INC-[0-9]+)`,
		},
		{
			name:        "the hint falls back to the compiled pattern",
			role:        func(r *Role) { r.TicketFormat = "" },
			req:         with(func(r *Request) { r.Ticket = "nope" }),
			wantReason:  ReasonTicketInvalid,
			wantMessage: `the ticket reference "nope" does not have the expected form (^(?:INC-[0-9]+)$)`,
		},
		{name: "alternation anchored as a whole: first branch", role: func(r *Role) { r.Ticket = ticketPattern(`INC-[0-9]+|CHG-[0-9]+`) }, req: with(func(r *Request) { r.Ticket = "INC-1" }), wantReason: ReasonAllowed},
		{name: "alternation anchored as a whole: second branch", role: func(r *Role) { r.Ticket = ticketPattern(`INC-[0-9]+|CHG-[0-9]+`) }, req: with(func(r *Request) { r.Ticket = "CHG-2" }), wantReason: ReasonAllowed},
		{name: "alternation anchored as a whole: junk after the first branch", role: func(r *Role) { r.Ticket = ticketPattern(`INC-[0-9]+|CHG-[0-9]+`) }, req: with(func(r *Request) { r.Ticket = "INC-1 junk" }), wantReason: ReasonTicketInvalid},
		{name: "alternation anchored as a whole: junk before the second branch", role: func(r *Role) { r.Ticket = ticketPattern(`INC-[0-9]+|CHG-[0-9]+`) }, req: with(func(r *Request) { r.Ticket = "junk CHG-2" }), wantReason: ReasonTicketInvalid},
		{name: "no ticket required: none given", role: func(r *Role) { r.Ticket = nil }, req: with(func(r *Request) { r.Ticket = "" }), wantReason: ReasonAllowed},
		{name: "no ticket required: anything given is not checked", role: func(r *Role) { r.Ticket = nil }, req: with(func(r *Request) { r.Ticket = "whatever" }), wantReason: ReasonAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			if tt.role != nil {
				tt.role(r)
			}
			d := r.Activation(tt.req, t0)
			if d.Reason != tt.wantReason {
				t.Fatalf("Reason = %q, want %q (decision %+v)", d.Reason, tt.wantReason, d)
			}
			if d.Allowed != (tt.wantReason == ReasonAllowed) {
				t.Errorf("Allowed = %v with reason %q", d.Allowed, d.Reason)
			}
			if tt.wantMessage != "" && d.Message != tt.wantMessage {
				t.Errorf("Message = %q, want %q", d.Message, tt.wantMessage)
			}
			if d.Allowed {
				if d.Message != "" {
					t.Errorf("allowed with message %q", d.Message)
				}
				if !d.EligibleUntil.Equal(r.Eligibility[0].Until) {
					t.Errorf("EligibleUntil = %v, want the grant's until %v", d.EligibleUntil, r.Eligibility[0].Until)
				}
			} else if d.Message == "" {
				t.Errorf("refusal %q without a message", d.Reason)
			}
		})
	}
}

func TestTicketHelpers(t *testing.T) {
	r := &Role{}
	if r.TicketRequired() || r.TicketHint() != "" {
		t.Errorf("no ticket: TicketRequired() = %v, TicketHint() = %q", r.TicketRequired(), r.TicketHint())
	}
	r.Ticket = ticketPattern(`INC-[0-9]+`)
	if !r.TicketRequired() || r.TicketHint() != `^(?:INC-[0-9]+)$` {
		t.Errorf("pattern only: TicketRequired() = %v, TicketHint() = %q", r.TicketRequired(), r.TicketHint())
	}
	r.TicketFormat = "INC-<number>"
	if r.TicketHint() != "INC-<number>" {
		t.Errorf("with a format: TicketHint() = %q", r.TicketHint())
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{1500 * time.Millisecond, "1.5s"},
		{30 * time.Second, "30s"},
		{time.Minute, "1m"},
		{90 * time.Second, "1m30s"},
		{10 * time.Minute, "10m"},
		{15 * time.Minute, "15m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{70 * time.Minute, "1h10m"},
		{time.Hour + 30*time.Second, "1h0m30s"},
		{10*time.Hour + 10*time.Minute, "10h10m"},
		{24 * time.Hour, "24h"},
		{100 * time.Hour, "100h"},
		{-time.Hour, "-1h"},
	}
	for _, tt := range tests {
		if got := FormatDuration(tt.in); got != tt.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
