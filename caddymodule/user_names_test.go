package caddymodule

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-jit/caddy-jit/policy"
)

func TestParseUserNames(t *testing.T) {
	tests := []struct {
		in      string
		want    policy.UserNames
		wantErr bool
	}{
		{"", policy.CaseSensitive, false},
		{"case_sensitive", policy.CaseSensitive, false},
		{"case_insensitive", policy.CaseInsensitive, false},
		{"CASE_INSENSITIVE", 0, true},
		{"insensitive", 0, true},
		{"nfkc", 0, true},
	}
	for _, tt := range tests {
		got, err := parseUserNames(tt.in)
		if (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
			t.Errorf("parseUserNames(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && (!strings.Contains(err.Error(), "case_sensitive") || !strings.Contains(err.Error(), "case_insensitive")) {
			t.Errorf("parseUserNames(%q): the error should name both values: %v", tt.in, err)
		}
	}
}

// userNamesCaddyfile is a jit option with the given user_names line and role body.
func userNamesCaddyfile(option, role string) string {
	return "{\n\tjit {\n\t\t" + option + "\n\t\trole r {\n\t\t\tmax_duration 1h\n" + role + "\n\t\t}\n\t}\n}\n"
}

func TestCaddyfileUserNames(t *testing.T) {
	tests := []struct {
		name, option, role string
		// wantErr lists what the error must say; none means the config loads.
		wantErr []string
	}{
		{"default", "", "\t\t\teligible alice Alice", nil},
		{"case_sensitive", "user_names case_sensitive", "\t\t\teligible alice Alice", nil},
		{"one user twice in two cases is fine", "user_names case_insensitive", "\t\t\teligible alice Alice ALICE", nil},
		{"approvers in two cases, count 1", "user_names case_insensitive",
			"\t\t\teligible carol\n\t\t\tapproval {\n\t\t\t\tapprovers bob Bob\n\t\t\t}", nil},
		{"two spellings of one approver cannot make a count of 2", "user_names case_insensitive",
			"\t\t\teligible carol\n\t\t\tapproval {\n\t\t\t\tapprovers bob Bob\n\t\t\t\tcount 2\n\t\t\t}",
			[]string{`"bob" and "Bob" name one person`, "count 2", "case folding", "Caddyfile:"}},
		{"case-sensitive names are two approvers", "user_names case_sensitive",
			"\t\t\teligible carol\n\t\t\tapproval {\n\t\t\t\tapprovers bob Bob\n\t\t\t\tcount 2\n\t\t\t}", nil},
		{"NFD and NFC are one approver even case-sensitive", "",
			"\t\t\teligible carol\n\t\t\tapproval {\n\t\t\t\tapprovers zo\u00eb zoe\u0308\n\t\t\t\tcount 2\n\t\t\t}",
			[]string{"name one person", "NFC", "user_names case_sensitive"}},
		{"a group keeps counting as many", "user_names case_insensitive",
			"\t\t\teligible carol\n\t\t\tapproval {\n\t\t\t\tapprovers bob Bob group:ops\n\t\t\t\tcount 2\n\t\t\t}", nil},
		{"a user that folds into group syntax", "user_names case_insensitive", "\t\t\teligible Group:ops",
			[]string{`"Group:ops"`, "group:NAME"}},
		{"the same user written Group:ops is a user when case-sensitive", "", "\t\t\teligible Group:ops", nil},
		{"an unknown value", "user_names nfkc", "\t\t\teligible alice", []string{`user_names "nfkc"`, "case_insensitive"}},
		{"no value", "user_names", "\t\t\teligible alice", []string{"argument"}},
		{"two values", "user_names case_sensitive case_insensitive", "\t\t\teligible alice", []string{"argument"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adapt(t, userNamesCaddyfile(tt.option, tt.role))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("the config should load: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("the config loaded; want an error saying %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the error does not say %q: %v", want, err)
				}
			}
		})
	}
}

// The Caddyfile keeps the names as the operator wrote them; Provision puts them in
// canonical form, each once.
func TestCanonicalizeNamesRewritesSubjectsAndApprovers(t *testing.T) {
	cfg, err := adapt(t, userNamesCaddyfile("user_names case_insensitive",
		"\t\t\teligible Alice ALICE group:Ops zoe\u0308\n\t\t\tapproval {\n\t\t\t\tapprovers Bob bob group:DBA\n\t\t\t}"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(cfg["apps"].(map[string]any)["jit"])
	var app App
	if err := json.Unmarshal(raw, &app); err != nil {
		t.Fatal(err)
	}
	if app.UserNames != "case_insensitive" {
		t.Errorf("user_names adapts to %q, want case_insensitive", app.UserNames)
	}
	if got := app.Roles["r"].Eligible[0].Subjects; !slices.Equal(got, []string{"Alice", "ALICE", "group:Ops", "zoe\u0308"}) {
		t.Errorf("the adapted config should keep the subjects as written, got %+q", got)
	}
	written := app.Roles["r"]
	app.setDefaults()
	if err := app.canonicalizeNames(); err != nil {
		t.Fatal(err)
	}
	if app.names != policy.CaseInsensitive {
		t.Errorf("names = %v, want case_insensitive", app.names)
	}
	if got, want := app.Roles["r"].Eligible[0].Subjects, []string{"alice", "group:ops", "zo\u00eb"}; !slices.Equal(got, want) {
		t.Errorf("canonical subjects %+q, want %+q", got, want)
	}
	if got, want := app.Roles["r"].Approval.Approvers, []string{"bob", "group:dba"}; !slices.Equal(got, want) {
		t.Errorf("canonical approvers %+q, want %+q", got, want)
	}
	if !slices.Equal(written.Eligible[0].Subjects, []string{"Alice", "ALICE", "group:Ops", "zoe\u0308"}) {
		t.Errorf("canonicalizeNames changed the config it was given: %+q", written.Eligible[0].Subjects)
	}
	roles, err := buildRoles(app.Roles)
	if err != nil {
		t.Fatal(err)
	}
	r := roles["r"]
	for _, c := range []policy.Caller{{User: "alice"}, {User: "zo\u00eb"}, {User: "x", Groups: []string{"ops"}}} {
		if !r.Eligible(c, now()).Allowed {
			t.Errorf("%+v should be eligible", c)
		}
	}
	if d := r.Approval.MayApprove(policy.Caller{User: "bob"}, "alice"); !d.Allowed {
		t.Errorf("bob should approve alice: %v", d.Message)
	}
	if d := r.Approval.MayApprove(policy.Caller{User: "alice", Groups: []string{"dba"}}, "alice"); d.Reason != policy.ReasonSelfApproval {
		t.Errorf("alice approving alice: %v, want self_approval", d.Reason)
	}
}

func TestIdentityAndCallerAreCanonical(t *testing.T) {
	tests := []struct {
		names      policy.UserNames
		user       string
		groups     string
		wantUser   string
		wantGroups []string
	}{
		{policy.CaseSensitive, "ALICE", "Ops, dba", "ALICE", []string{"Ops", "dba"}},
		{policy.CaseInsensitive, "ALICE", "Ops, dba", "alice", []string{"ops", "dba"}},
		{policy.CaseInsensitive, "Zoe\u0308", "", "zo\u00eb", nil},
		{policy.CaseSensitive, "Zoe\u0308", "D\u00c9V", "Zo\u00eb", []string{"D\u00c9V"}},
		{policy.CaseInsensitive, "alice", "ops,\xff,,OPS", "alice", []string{"ops", "ops"}},
		// No canonical form, too long: no identity.
		{policy.CaseInsensitive, "al\xffice", "ops", "", nil},
		{policy.CaseSensitive, strings.Repeat("a", maxUserLength+1), "", "", nil},
		// Folding may lengthen a name past the bound ("ŉ", 2 bytes, folds to "ʼn", 3).
		{policy.CaseSensitive, strings.Repeat("\u0149", maxUserLength/2), "", strings.Repeat("\u0149", maxUserLength/2), nil},
		{policy.CaseInsensitive, strings.Repeat("\u0149", maxUserLength/2), "", "", nil},
	}
	for _, tt := range tests {
		for _, single := range []bool{true, false} {
			a := &App{Identity: "{http.auth.user.id}", Groups: "{http.request.header.X-Groups}", names: tt.names}
			if single {
				a.identityKey = "http.auth.user.id"
			} else {
				a.Identity = "{http.auth.user.id}{http.vars.empty}"
			}
			repl := caddy.NewReplacer()
			repl.Set("http.auth.user.id", tt.user)
			repl.Set("http.request.header.X-Groups", tt.groups)
			user := a.identity(repl)
			if user != tt.wantUser {
				t.Errorf("%s identity(%+q), single placeholder %v = %+q, want %+q", tt.names, tt.user, single, user, tt.wantUser)
			}
			if user == "" {
				continue
			}
			c := a.caller(repl, user)
			if c.User != tt.wantUser || !slices.Equal(c.Groups, tt.wantGroups) {
				t.Errorf("%s caller(%+q, groups %+q) = %+v, want %+q in %+q", tt.names, user, tt.groups, c, tt.wantUser, tt.wantGroups)
			}
			// Pages pass the placeholder as read: the caller is canonical all the same.
			if raw := a.caller(repl, tt.user); raw.User != tt.wantUser {
				t.Errorf("%s caller of the raw %+q = %+q, want %+q", tt.names, tt.user, raw.User, tt.wantUser)
			}
		}
	}
	a := &App{names: policy.CaseInsensitive}
	for _, user := range []string{"al\xffice", strings.Repeat("\u0149", maxUserLength/2)} {
		if c := a.caller(caddy.NewReplacer(), user); c.User != "" || c.Groups != nil {
			t.Errorf("a caller without a canonical name of at most %d bytes should be the zero Caller, got %+v", maxUserLength, c)
		}
	}
}

func TestIdentityOfACanonicalASCIINameAllocatesNothing(t *testing.T) {
	a := &App{Identity: "{http.auth.user.id}", identityKey: "http.auth.user.id", names: policy.CaseInsensitive}
	repl := caddy.NewReplacer()
	repl.Set("http.auth.user.id", "alice@example.com")
	if n := testing.AllocsPerRun(100, func() { _ = a.identity(repl) }); n != 0 {
		t.Errorf("identity allocates %.0f times per request, want 0", n)
	}
}

func TestUserArg(t *testing.T) {
	tests := []struct {
		names   policy.UserNames
		in      string
		want    string
		wantErr string
	}{
		{policy.CaseSensitive, "Alice", "Alice", ""},
		{policy.CaseInsensitive, "Alice", "alice", ""},
		{policy.CaseInsensitive, "Zoe\u0308", "zo\u00eb", ""},
		{policy.CaseSensitive, "", "", "no user name"},
		{policy.CaseInsensitive, "a/b", "", "slash"},
		{policy.CaseInsensitive, "al\xffice", "", "control character"},
		{policy.CaseInsensitive, strings.Repeat("\u0149", maxUserLength/2), "", "canonical form"},
	}
	for _, tt := range tests {
		got, err := userArg(tt.names, tt.in)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("%s userArg(%+q) = %+q, %v; want %+q", tt.names, tt.in, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s userArg(%+q) = %+q, %v; want an error saying %q", tt.names, tt.in, got, err, tt.wantErr)
		}
	}
}
