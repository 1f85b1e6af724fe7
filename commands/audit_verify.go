package commands

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/words"
)

// `caddy jit audit verify`: the options from the flags, the exit code from the
// verification, and its text.

// cmdAuditVerify runs `caddy jit audit verify`.
func cmdAuditVerify(stdout, _ io.Writer, fl caddycmd.Flags) (int, error) {
	files := fl.Args()
	if len(files) == 0 {
		return auditExitError, errors.New("no audit log file: caddy jit audit verify <file>… (rotated files first)")
	}
	cfg, configFile, err := flaggedConfig(fl)
	if err != nil {
		return auditExitError, err
	}
	var opts audit.VerifyOptions
	storage := ""
	if cfg != nil {
		var stored audit.AuditKeys
		if opts.Heads, stored, storage, err = savedChainState(cfg, configFile); err != nil {
			return auditExitError, err
		}
		opts.CheckHeads = true
		opts.AuditKeys = stored
	}
	if path := fl.String("jwks"); path != "" {
		published, err := audit.ReadAuditJWKS(path)
		if err != nil {
			return auditExitError, err
		}
		opts.AuditKeys = trustedAuditKeys(opts.AuditKeys, published)
	}
	if len(opts.AuditKeys) == 0 {
		opts.AuditKeys = nil // a storage without an audit key: the checkpoints are unchecked
	}
	if path := fl.String("witness"); path != "" {
		if opts.AuditKeys == nil {
			return auditExitError, errors.New("--witness needs the audit keys that signed the checkpoints: give --jwks FILE (a copy of /.jit/jwks.json) or --config with the storage that holds the audit key")
		}
		if opts.Witnessed, err = audit.ReadWitnessFile(path); err != nil {
			return auditExitError, err
		}
	}
	if opts.Instances, err = auditInstances(fl); err != nil {
		return auditExitError, err
	}
	inputs, err := auditInputs(files)
	if err != nil {
		return auditExitError, err
	}
	res, err := audit.VerifyChain(inputs, opts)
	if err != nil {
		return auditExitError, err
	}
	if err := instancesFound(opts, res); err != nil {
		return auditExitError, err
	}
	if fl.Bool("json") {
		err = printJSON(stdout, res)
	} else {
		err = writeAuditVerification(stdout, res, storage, configFile)
	}
	if err != nil {
		return auditExitError, err
	}
	switch {
	case !res.Intact:
		return auditExitFinding, fmt.Errorf("the audit chain is broken: %s", printable.String(res.FirstBreak().String()))
	case len(res.WitnessLinesEdited) > 0:
		w := res.WitnessLinesEdited[0]
		return auditExitFinding, fmt.Errorf("the witness file was edited: %s:%d: %s", printable.String(w.File), w.Line, printable.String(w.Problem))
	case res.Cut:
		return auditExitCut, fmt.Errorf("events are missing from the audit log: %s", printable.String(res.Cuts[0].String()))
	}
	return auditExitOK, nil
}

// auditInstances are the instances named with --instance, each once.
func auditInstances(fl caddycmd.Flags) ([]string, error) {
	ids, err := fl.GetStringSlice("instance")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		id = strings.TrimSpace(id)
		if id == "" {
			return nil, errors.New("--instance needs an instance id (the instance field of the audit events, as in `caddy jit audit verify` without --instance)")
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

// instancesFound refuses an --instance that nothing knows: no event in the files, no
// saved head, no witnessed checkpoint. A typo would otherwise leave every head and
// checkpoint uncompared.
func instancesFound(opts audit.VerifyOptions, res *audit.ChainVerification) error {
	for _, id := range opts.Instances {
		known := slices.ContainsFunc(res.Instances, func(in audit.InstanceChain) bool { return in.Instance == id }) ||
			slices.ContainsFunc(opts.Heads, func(h audit.ChainHead) bool { return h.Instance == id }) ||
			slices.ContainsFunc(opts.Witnessed, func(w audit.WitnessedCheckpoint) bool { return w.Checkpoint.Instance == id })
		if !known {
			return fmt.Errorf("--instance %s: no event of it in the files, no saved head and no witnessed checkpoint: check the id (the instance field of the events)", printable.String(id))
		}
	}
	return nil
}

// trustedAuditKeys are the keys of the storage and of the JWKS file together: a
// key rotated out of storage still checks the checkpoints it signed when its JWK
// was kept.
func trustedAuditKeys(stored, published audit.AuditKeys) audit.AuditKeys {
	keys := make(audit.AuditKeys, len(stored)+len(published))
	maps.Copy(keys, stored)
	maps.Copy(keys, published)
	return keys
}

func writeAuditVerification(w io.Writer, res *audit.ChainVerification, storage, configFile string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Read %s, %s: %s of %s.\n", words.Plural(len(res.Files), "file"), words.Plural(res.Lines, "line"),
		words.Plural(res.Events, "event"), words.Plural(len(res.Instances), "instance"))
	if len(res.Instances) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  INSTANCE\tSEQ\tEVENTS\tFROM\tTO\tSAVED HEAD")
		for _, in := range res.Instances {
			head := "-"
			if in.SavedHeadSeq != nil {
				head = strconv.FormatInt(*in.SavedHeadSeq, 10)
			}
			fmt.Fprintf(tw, "  %s\t%d…%d\t%d\t%s\t%s\t%s\n", printable.String(in.Instance), in.FirstSeq, in.LastSeq, in.Events,
				printable.String(in.First), printable.String(in.Last), head)
		}
		tw.Flush()
	}
	switch {
	case !res.HeadsChecked && res.Witnessed > 0:
		b.WriteString("Checked for events missing at the end up to the witness's last checkpoint only: give --config to compare with the chain heads saved in storage too.\n")
	case !res.HeadsChecked:
		b.WriteString("Not checked for events missing at the end: give --config to compare with the chain heads saved in storage, or --witness.\n")
	case res.SavedHeads == 0:
		fmt.Fprintf(&b, "Not checked for events missing at the end: %s (the storage of %s) holds no saved chain head. Is it the storage of the instances that wrote the log?\n",
			printable.String(storage), printable.String(configFile))
	default:
		fmt.Fprintf(&b, "Compared with the %s saved in %s (the storage of %s).\n", words.Plural(res.SavedHeads, "chain head"), printable.String(storage), printable.String(configFile))
		for _, h := range res.HeadsNotInFiles {
			fmt.Fprintf(&b, "Note: instance %s has a saved chain head (seq %d), not compared: it is not named by --instance.\n",
				printable.String(h.Instance), h.Seq)
		}
	}
	writeCheckpointSummary(&b, res)
	switch {
	case res.Intact && res.Cut:
		fmt.Fprintf(&b, "The chain is intact, but events are missing (%s):\n", words.Plural(len(res.Cuts), "cut"))
	case res.Intact:
		b.WriteString("The chain is intact.\n")
	default:
		fmt.Fprintf(&b, "The chain is BROKEN (%s). The first:\n", words.Plural(res.BreakCount, "break"))
		for i, br := range res.Breaks {
			if i == maxListedBreaks {
				fmt.Fprintf(&b, "  … and %d more (--json lists up to %d)\n", res.BreakCount-maxListedBreaks, audit.MaxReportedBreaks)
				break
			}
			if i == 1 {
				b.WriteString("Then:\n")
			}
			fmt.Fprintf(&b, "  %s\n", printable.String(br.String()))
			if br.Suspect != "" {
				fmt.Fprintf(&b, "  %s: the line to look at first\n", printable.String(br.Suspect))
			}
		}
		if res.Cut {
			fmt.Fprintf(&b, "Events missing (%s):\n", words.Plural(len(res.Cuts), "cut"))
		}
	}
	for _, c := range res.Cuts {
		fmt.Fprintf(&b, "  %s\n", printable.String(c.String()))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeCheckpointSummary says how many checkpoints were checked, how to check them
// when they were not, and what the witness held.
func writeCheckpointSummary(b *strings.Builder, res *audit.ChainVerification) {
	switch {
	case res.Checkpoints == 0 && res.SignaturesChecked:
		b.WriteString("No checkpoint in the files (the server writes one every N events and at a stop, when it has an audit key).\n")
	case res.Checkpoints == 0:
		// No keys and no checkpoint: a server without an audit key; nothing to say.
	case res.SignaturesChecked:
		fmt.Fprintf(b, "Checkpoints: %d, %d verified with the audit key.\n", res.Checkpoints, res.CheckpointsVerified)
	default:
		fmt.Fprintf(b, "Checkpoints: %d, unchecked: give --jwks FILE (a copy of https://HOST/.jit/jwks.json) or --config to check their signatures.\n",
			res.CheckpointsUnchecked)
	}
	if res.Witnessed > 0 {
		fmt.Fprintf(b, "Compared with %s a witness kept.\n", words.Plural(res.Witnessed, "checkpoint"))
	}
	for _, w := range res.WitnessedNotInFiles {
		fmt.Fprintf(b, "Note: the witness holds a checkpoint of instance %s (seq %d, %s:%d), not compared: it is not named by --instance.\n",
			printable.String(w.Checkpoint.Instance), w.Seq, printable.String(w.File), w.Line)
	}
	for _, w := range res.WitnessLinesEdited {
		fmt.Fprintf(b, "The witness file was EDITED at %s:%d: %s.\n", printable.String(w.File), w.Line, printable.String(w.Problem))
	}
}
