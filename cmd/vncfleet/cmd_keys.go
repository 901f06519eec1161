package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/app"
	"github.com/vncfleet/vncfleet/internal/secretbox"
	"github.com/vncfleet/vncfleet/internal/store"
)

func init() {
	register(newKeysCmd)
	register(newRekeyCmd)
}

// withStore runs fn on DATABASE_URL's store with the configured keyring (nil when no
// key is set), for the commands that work on the database directly.
func withStore(cmd *cobra.Command, fn func(st *store.Store, keys *secretbox.Keyring) error) error {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	keys, err := app.Keyring(cfg)
	if err != nil {
		return withExit(exitBadInput, err)
	}
	pool, err := app.OpenPool(cmd.Context(), cfg.DatabaseURL)
	if err != nil {
		return exitFor(err)
	}
	defer pool.Close()
	st := store.New(pool, keys)
	if err := st.Ping(cmd.Context()); err != nil {
		return withExit(exitUnreachable, err)
	}
	return fn(st, keys)
}

func newKeysCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keys",
		Short: "Which encryption key id sealed how many stored secrets",
		Long: `keys counts the secrets stored in DATABASE_URL (cloud passwords, pending passwords of
rotations in progress, Zenlayer console URLs) by the id of the key that sealed them, and says
whether the configured keys (VNCFLEET_SECRET_KEY, VNCFLEET_OLD_SECRET_KEYS) hold it. An old
key may leave VNCFLEET_OLD_SECRET_KEYS once it seals nothing: run vncfleet rekey first.
Exit 1 when some secrets are sealed by a key that is not configured (they cannot be read).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd, func(st *store.Store, keys *secretbox.Keyring) error {
				inv, err := st.Keys(cmd.Context())
				if err != nil {
					return withExit(exitUnreachable, err)
				}
				if missing := printKeys(cmd.OutOrStdout(), inv, keys); missing > 0 {
					return withExit(exitSomeFailed, fmt.Errorf("%s sealed by keys that are not configured", fleet.PluralVerb(missing, "stored secret", "is", "are")))
				}
				return nil
			})
		},
	}
}

// printKeys writes the inventory as a table and returns how many secrets no
// configured key opens.
func printKeys(out io.Writer, inv store.KeyInventory, keys *secretbox.Keyring) (missing int) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tCONFIGURED\tPASSWORDS\tPENDING PASSWORDS\tCONSOLE URLS")
	for _, k := range inv.Keys {
		held := "no: cannot be read"
		switch {
		case keys == nil:
			held = "? (no VNCFLEET_SECRET_KEY)"
		case k.KeyID == keys.PrimaryID():
			held = "primary"
		case keys.Has(k.KeyID):
			held = "old: run rekey"
		default:
			missing += k.Total()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", k.KeyID, held,
			k.Counts[store.SecretPassword], k.Counts[store.SecretPendingPassword], k.Counts[store.SecretConsoleURL])
	}
	_ = tw.Flush()
	if len(inv.Keys) == 0 {
		fmt.Fprintln(out, "no sealed secrets stored")
	}
	if inv.PlaintextConsoleURLs > 0 {
		fmt.Fprintf(out, "%s stored in clear (from before this version): run rekey to seal them\n", fleet.Plural(inv.PlaintextConsoleURLs, "console URL"))
	}
	return missing
}

func newRekeyCmd() *cobra.Command {
	var batch int
	cmd := &cobra.Command{
		Use:   "rekey",
		Short: "Re-seal every stored secret under the current VNCFLEET_SECRET_KEY",
		Long: `rekey re-seals every stored secret that an old key sealed under the current
VNCFLEET_SECRET_KEY, and seals console URLs stored in clear, in batches. The old keys must be
in VNCFLEET_OLD_SECRET_KEYS while it runs. It is resumable (interrupted, it continues where it
stopped) and safe while serve runs: a row that changes under it, such as a password that a
rotation promotes, is read again rather than overwritten. When it ends, vncfleet keys shows
only the current key, and the old ones may leave VNCFLEET_OLD_SECRET_KEYS.`,
		Example: `  VNCFLEET_SECRET_KEY_FILE=new.key VNCFLEET_OLD_SECRET_KEYS_FILE=old.key vncfleet rekey
  vncfleet keys`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd, func(st *store.Store, keys *secretbox.Keyring) error {
				if keys == nil {
					return withExit(exitBadInput, store.ErrNoKey)
				}
				errOut := cmd.ErrOrStderr()
				res, err := st.Rekey(cmd.Context(), batch, func(r store.RekeyResult) {
					fmt.Fprintf(errOut, "rekey: %d re-sealed, %d sealed\n", r.Resealed, r.Sealed)
				})
				fmt.Fprintf(cmd.OutOrStdout(), "rekey: %s re-sealed under key %s, %s sealed, %s read again after a concurrent change\n",
					fleet.Plural(res.Resealed, "secret"), keys.PrimaryID(), fleet.Plural(res.Sealed, "console URL"), fleet.Plural(res.Raced, "row"))
				switch {
				case err == nil:
					return nil
				case errors.Is(err, secretbox.ErrUnknownKey), errors.Is(err, secretbox.ErrOpen), errors.Is(err, store.ErrRekeyRaced):
					return withExit(exitSomeFailed, err)
				}
				return withExit(exitUnreachable, err)
			})
		},
	}
	cmd.Flags().IntVar(&batch, "batch", store.DefaultRekeyBatch, "device rows per transaction")
	return cmd
}
