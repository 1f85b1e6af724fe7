package commands

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// checkpointedAuditLog writes instance inst-w's log with the real batched writer and
// a checkpoint every 3 events, the audit key and the head in the storage at dir:
// audit_started (1), events 2, 3, checkpoint 4, events 5…7, checkpoint 8, events
// 9…11, checkpoint 12. It returns the log's lines, the witness's file (the
// checkpoints as the server sent them) and a JWKS file with the audit key.
func checkpointedAuditLog(t *testing.T, dir string) (lines []string, witness, jwks string) {
	t.Helper()
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: dir}
	key, err := audit.LoadAuditKey(ctx, st, auditTestNow)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := audit.LoadChain(ctx, st, "inst-w")
	if err != nil {
		t.Fatal(err)
	}
	out := &testkit.SyncBuffer{}
	chain.SetMarks(audit.Marks{Key: key, Every: 3, Interval: time.Hour})
	chain.Batch(audit.Output{Writer: out, FlushInterval: time.Hour})
	w := audit.NewWriter(zap.NewNop(), chain, func() time.Time { return auditTestNow })
	w.Started()
	for i := range 8 {
		w.Event(audit.EventKeysRotated, zap.String("kid", "k"), zap.String("by", "op"), zap.Int("i", i))
	}
	if err := chain.Stop(ctx, auditTestNow); err != nil {
		t.Fatal(err)
	}
	lines = strings.SplitAfter(out.String(), "\n")
	lines = lines[:len(lines)-1]
	var kept strings.Builder
	for i, line := range lines {
		if audit.ParseLine("log", i+1, []byte(strings.TrimSpace(line))).Event() == audit.EventCheckpoint {
			kept.WriteString(line)
		}
	}
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{key.JWK()}})
	if err != nil {
		t.Fatal(err)
	}
	return lines, auditWriteFile(t, "witness.jsonl", []byte(kept.String())), auditWriteFile(t, "jwks.json", set)
}

func TestAuditVerifyCommandCheckpointsAndCuts(t *testing.T) {
	dir := t.TempDir()
	caddyfile := auditWriteFile(t, "Caddyfile", []byte("{\n\tstorage file_system \""+dir+"\"\n}\n"))
	lines, witness, jwks := checkpointedAuditLog(t, dir)
	if len(lines) != 12 {
		t.Fatalf("%d lines, want 12:\n%s", len(lines), strings.Join(lines, ""))
	}
	full := auditWriteFile(t, "jit-audit.log", []byte(strings.Join(lines, "")))
	cut := auditWriteFile(t, "cut.log", []byte(strings.Join(lines[:6], "")))
	cutAndEdited := auditWriteFile(t, "edited.log", []byte(strings.Replace(strings.Join(lines[:6], ""), `"i":1`, `"i":7`, 1)))

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		out, err string // parts of the output and of the error
	}{
		{name: "intact, checked with the JWKS and the witness", args: []string{full, "--jwks", jwks, "--witness", witness},
			out: "Checkpoints: 3, 3 verified with the audit key.\nCompared with 3 checkpoints a witness kept.\nThe chain is intact.\n"},
		{name: "intact, checkpoints unchecked without keys", args: []string{full},
			out: "Checkpoints: 3, unchecked: give --jwks FILE (a copy of https://HOST/.jit/jwks.json) or --config"},
		{name: "intact, checked with the key in the config's storage", args: []string{full, "--config", caddyfile},
			out: "Checkpoints: 3, 3 verified with the audit key."},
		{name: "cut short, seen by the witness", args: []string{cut, "--jwks", jwks, "--witness", witness}, code: 3,
			out: "The chain is intact, but events are missing (1 cut):\n  instance inst-w: seq 7–12 missing (witness: the witness holds the checkpoint at seq 12 (witness " + witness + ":3,",
			err: "events are missing from the audit log: instance inst-w: seq 7–12 missing"},
		{name: "cut short, seen by the saved head and the witness", args: []string{cut, "--config", caddyfile, "--witness", witness}, code: 3,
			out: "missing (2 cuts):\n  instance inst-w: seq 7–12 missing (saved head: the head saved in storage is seq 12, the files end at seq 6 (" + cut + ":6): the instance stopped cleanly",
			err: "events are missing from the audit log: instance inst-w: seq 7–12 missing (saved head: "},
		{name: "a break wins over a cut", args: []string{cutAndEdited, "--jwks", jwks, "--witness", witness}, code: 1,
			out: "Events missing (1 cut):\n  instance inst-w: seq 7–12 missing (witness: ", err: "the audit chain is broken: " + cutAndEdited + ":4: prev does not match the hash of line 3"},
		{name: "--witness without keys", args: []string{cut, "--witness", witness}, code: 2, err: "--witness needs the audit keys that signed the checkpoints: give --jwks FILE (a copy of /.jit/jwks.json) or --config"},
		{name: "--jwks without an audit key", args: []string{full, "--jwks", caddyfile}, code: 2, err: "not a JWKS"},
		{name: "--witness with a log as the witness file", args: []string{full, "--jwks", jwks, "--witness", full}, code: 2, err: full + ":1: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, err := runAuditCmd(t, auditVerifyCommand, cmdAuditVerify, tc.args...)
			errText := ""
			if err != nil {
				errText = err.Error()
			}
			if code != tc.code || !strings.Contains(out, tc.out) || (tc.err == "") != (err == nil) || !strings.Contains(errText, tc.err) {
				t.Fatalf("exit %d (want %d), error %v (want %q)\n%s\nwant output with %q", code, tc.code, err, tc.err, out, tc.out)
			}
		})
	}

	code, out, _ := runAuditCmd(t, auditVerifyCommand, cmdAuditVerify, cut, "--jwks", jwks, "--witness", witness, "--json")
	var res audit.ChainVerification
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if code != 3 || !res.Intact || !res.Cut || len(res.Cuts) != 1 || res.Cuts[0].Source != audit.CutWitness || res.Cuts[0].FromSeq != 7 ||
		res.Cuts[0].ToSeq != 12 || res.CheckpointsVerified != 1 || res.Witnessed != 3 {
		t.Errorf("--json: exit %d, %+v", code, res)
	}
}

// With saved heads and a witness, verify fails closed: an emptied log is a cut of the
// whole chain, and --instance names the instances whose logs the files hold.
func TestAuditVerifyCommandInstancesAndEmptiedLog(t *testing.T) {
	dir := t.TempDir()
	caddyfile := auditWriteFile(t, "Caddyfile", []byte("{\n\tstorage file_system \""+dir+"\"\n}\n"))
	lines, witness, jwks := checkpointedAuditLog(t, dir)
	full := auditWriteFile(t, "jit-audit.log", []byte(strings.Join(lines, "")))
	empty := auditWriteFile(t, "emptied.log", nil)
	editedWitness := auditWriteFile(t, "edited-witness.jsonl", []byte(strings.Replace(lines[3], `,"seq":4,`, `,"seq":40,`, 1)))
	evidence := []string{"--config", caddyfile, "--jwks", jwks, "--witness", witness}

	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		out, err string // parts of the output and of the error
	}{
		{name: "emptied log", args: append([]string{empty}, evidence...), code: 3,
			out: "instance inst-w: seq 1–12 missing (saved head: the head saved in storage is seq 12, and the files hold no event of the instance: its log was emptied or replaced",
			err: "events are missing from the audit log: instance inst-w: seq 1–12 missing"},
		{name: "an --instance nothing knows", args: append([]string{empty, "--instance", "inst-other,inst-w", "--instance", "inst-other"}, evidence...),
			code: 2, err: "--instance inst-other: no event of it in the files, no saved head and no witnessed checkpoint: check the id"},
		{name: "the instance's log, named", args: append([]string{full, "--instance", "inst-w"}, evidence...), out: "The chain is intact.\n"},
		{name: "an empty --instance", args: append([]string{full, "--instance", "inst-w,"}, evidence...), code: 2, err: "--instance needs an instance id"},
		{name: "witness line edited", args: []string{full, "--jwks", jwks, "--witness", editedWitness}, code: 1,
			out: "The witness file was EDITED at " + editedWitness + ":1: witness line edited: its seq 40 is not head_seq + 1 = 4",
			err: "the witness file was edited: " + editedWitness + ":1: witness line edited: its seq 40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, err := runAuditCmd(t, auditVerifyCommand, cmdAuditVerify, tc.args...)
			errText := ""
			if err != nil {
				errText = err.Error()
			}
			if code != tc.code || !strings.Contains(out, tc.out) || (tc.err == "") != (err == nil) || !strings.Contains(errText, tc.err) {
				t.Fatalf("exit %d (want %d), error %v (want %q)\n%s\nwant output with %q", code, tc.code, err, tc.err, out, tc.out)
			}
		})
	}
}
