package commands

import (
	"encoding/json"
	"io"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// init registers `caddy jit` with Caddy's command line: a binary gets it by
// importing this package, as the root package caddyjit does.
func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:      "jit",
		Usage:     "<command>",
		Short:     jitShort,
		Long:      jitLong,
		CobraFunc: addJitSubcommands,
	})
}

const jitShort = "Manages caddy-jit, just-in-time access to protected sites"

var jitLong = `
Manages just-in-time access (the global 'jit' option): enrolls users for
TOTP, lists and removes their passkeys, lists and revokes sessions, clears
lockouts and rotates signing keys.
The subcommands talk to the admin API of a running Caddy; when --config
names a config with 'admin off', they work on its storage directly, and
running instances pick the change up on their next sync.

All subcommands reach Caddy's admin API at '` + caddy.DefaultAdminListen + `' by default. You may
explicitly specify the --address, or use the --config flag to load the admin
address from your config, if not using the default.`

// jitSubcommands build the subcommands of `caddy jit`. Each call must return a fresh
// command. Add one with addJitSubcommand from an init function of this package; the
// list is read only when Caddy builds its command tree in caddycmd.Main, after every
// init has run, so the order of files does not matter.
var jitSubcommands = []func() *cobra.Command{enrollCommand, credentialsCommand}

// addJitSubcommand adds a subcommand (such as sessions, revoke, unlock) to `caddy jit`.
// Call it from an init function.
func addJitSubcommand(build func() *cobra.Command) {
	jitSubcommands = append(jitSubcommands, build)
}

// addJitSubcommands is the CobraFunc of `caddy jit`: it adds the subcommands to the
// command that Caddy made from the registration in init.
func addJitSubcommands(cmd *cobra.Command) {
	for _, build := range jitSubcommands {
		cmd.AddCommand(build())
	}
}

// jitCommand builds `jit` with all its subcommands as a standalone command, the way
// Caddy builds it, for tests and for documentation generators.
func jitCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "jit <command>",
		Short: jitShort,
		Long:  jitLong,
		// as Caddy's root command does: no usage text after every error
		SilenceUsage: true,
	}
	addJitSubcommands(cmd)
	return cmd
}

// addAdminFlags adds the flags that locate the admin API, with the same names and
// help as Caddy's own commands (reload, stop, trust).
func addAdminFlags(cmd *cobra.Command) {
	cmd.Flags().StringP("address", "", "", "Address of the administration API listener (if --config is not used)")
	cmd.Flags().StringP("config", "c", "", "Configuration file (if --address is not used)")
	cmd.Flags().StringP("adapter", "a", "", "Name of config adapter to apply (if --config is used)")
}

// runWithStreams adapts a command function into cobra's RunE, with Caddy's handling
// of errors and exit codes (caddycmd.WrapCommandFuncForCobra). stdout is the command's
// output; stderr takes notes and, when working on storage directly, the audit events
// (both are the process's unless a test sets them).
func runWithStreams(f func(stdout, stderr io.Writer, fl caddycmd.Flags) (int, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		return caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
			return f(cmd.OutOrStdout(), cmd.ErrOrStderr(), fl)
		})(cmd, args)
	}
}

// printJSON prints v as indented JSON, as explain and the audit commands do with
// --json (sessions --json passes the admin API's own JSON through).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// now is the clock; tests replace it.
var now = time.Now
