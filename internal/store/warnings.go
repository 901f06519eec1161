package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/fleet"
)

// Plan warnings: what an upload is allowed to do but an operator most likely does
// not mean. They never block an upload; the plan carries them, for a dry run and a
// real upload alike.

// StaleAfter is how long a fleet's device may go unmentioned by any manifest before
// an upload that leaves it out warns about it: a merge upload never deletes it, so a
// device retired from the factory lives on in the cloud account.
const StaleAfter = 90 * 24 * time.Hour

// warningExamples is how many device ids a warning names.
const warningExamples = 5

// planWarnings lists the warnings of the staged manifest in table against the fleet.
func planWarnings(ctx context.Context, tx pgx.Tx, table string, fleetID int64, mode fleet.Mode) ([]string, error) {
	var openListen, noGroup int
	var openIDs, noGroupIDs []string
	// One scan of the staged rows for both counts and their first examples.
	if err := tx.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE open), count(*) FILTER (WHERE nogroup),
		       coalesce((array_agg(device_id ORDER BY line) FILTER (WHERE open))[1:$1], '{}'),
		       coalesce((array_agg(device_id ORDER BY line) FILTER (WHERE nogroup))[1:$1], '{}')
		FROM (SELECT line, device_id,
		             action = 'listen' AND allow_groups IS NULL AND allow_devices IS NULL AS open,
		             action = 'connect' AND groups IS NULL AS nogroup
		      FROM `+table+` WHERE state = 'present') s
		WHERE open OR nogroup`, warningExamples).Scan(&openListen, &noGroup, &openIDs, &noGroupIDs); err != nil {
		return nil, fmt.Errorf("plan warnings: %w", err)
	}
	var out []string
	if openListen > 0 {
		out = append(out, fmt.Sprintf("%s every connect address of the account (no allow_groups or allow_devices): %s",
			fleet.PluralVerb(openListen, "listen device", "accepts", "accept"), examples(openIDs, openListen)))
	}
	if noGroup > 0 {
		out = append(out, fmt.Sprintf("%s to no group, so only listen devices that name it in allow_devices (or have no access list) accept it: %s",
			fleet.PluralVerb(noGroup, "connect device", "belongs", "belong"), examples(noGroupIDs, noGroup)))
	}
	if mode == fleet.ModeReplace {
		return out, nil // the devices it leaves out are deleted, and the plan lists them
	}
	var stale int
	var staleIDs []string
	if err := tx.QueryRow(ctx, `
		SELECT count(*), coalesce((array_agg(d.device_id ORDER BY d.device_id))[1:$3], '{}')
		FROM devices d JOIN manifests m ON m.id = d.manifest_id
		WHERE d.fleet_id = $1 AND d.desired_state = 'present' AND m.uploaded_at < now() - $2::interval
		  AND NOT EXISTS (SELECT 1 FROM `+table+` s WHERE s.device_id = d.device_id)`,
		fleetID, StaleAfter, warningExamples).Scan(&stale, &staleIDs); err != nil {
		return nil, fmt.Errorf("plan warnings: %w", err)
	}
	if stale > 0 {
		out = append(out, fmt.Sprintf("%s of the fleet not mentioned by any manifest for over %s (still provisioned; a replace upload or state absent deletes them): %s",
			fleet.Plural(stale, "device"), fleet.Plural(int(StaleAfter.Hours()/24), "day"), examples(staleIDs, stale)))
	}
	return out, nil
}

// examples renders the first ids of a warning, and how many more there are.
func examples(ids []string, total int) string {
	s := strings.Join(ids, ", ")
	if more := total - len(ids); more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}
