// Command vncfleet provisions fleets of devices with VNC Cloud identities. It is one
// binary with subcommands (see `vncfleet help`); each subcommand lives in its own file
// and only wires configuration to the constructors of the internal packages.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes of the outside contract (docs/contract.md).
const (
	exitOK          = 0
	exitSomeFailed  = 1 // the work ran but some devices failed
	exitBadInput    = 2 // bad usage or invalid input; nothing was changed
	exitUnreachable = 3 // a dependency (database, server) cannot be reached
	exitTimeout     = 4 // --timeout passed before the work was settled; it goes on on the server
)

// exitError carries a specific exit code up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withExit(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// commands is filled by the init functions of the cmd_*.go files, so that each
// subcommand is added without editing this file.
var commands []func() *cobra.Command

func register(c func() *cobra.Command) { commands = append(commands, c) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "vncfleet",
		Short:         "Provision fleets of devices with VNC Cloud addresses",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "", "YAML config file (environment variables win over it)")
	root.PersistentFlags().Bool("insecure", false, "send the token over plain http:// to a host that is not loopback (anyone on the path can read it)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withExit(exitBadInput, err) })
	for _, c := range commands {
		root.AddCommand(c())
	}
	return root
}

func main() {
	err := newRootCmd().Execute()
	if err == nil {
		os.Exit(exitOK)
	}
	fmt.Fprintln(os.Stderr, "vncfleet:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	// Cobra reports unknown commands and bad arguments as plain errors: usage.
	os.Exit(exitBadInput)
}
