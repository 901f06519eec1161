package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/apiclient"
	"github.com/vncfleet/vncfleet/internal/progress"
)

func init() { register(newStatusCmd) }

func newStatusCmd() *cobra.Command {
	var fleetName, group, groupsAfter string
	var asJSON bool
	var groups int
	cmd := &cobra.Command{
		Use:   "status [MANIFEST_ID]",
		Short: "Counts per status, per group and per manifest",
		Long: `status asks the server at VNCFLEET_URL how far the work is.

With MANIFEST_ID: the progress of the devices that manifest last set, by status and by
group. Without: the counts of every fleet (or of --fleet NAME) per status and per
manifest. Either way, the number of groups and the first 100 groups by name (--groups
N, up to 10000, 0 for none); the next page starts --groups-after the last group shown,
which status names. --group G shows group G alone ("" for the devices in no group). A device
counts in every group it belongs to (its groups, or a listen device's allow_groups), so
the group rows may add up to more than the total. An unknown
fleet or manifest is "not found" (exit 2). Aligned text tables by default; --json prints
the server's answer as JSON.`,
		Example: `  vncfleet status
  vncfleet status --fleet factory
  vncfleet status --fleet factory --groups 500 --groups-after line-00099
  vncfleet status --fleet factory --group line-04242
  vncfleet status 12 --groups-after line-00099
  vncfleet status 12 --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var id int64
			if len(args) == 1 {
				var err error
				if id, err = parseManifestID(args[0]); err != nil {
					return err
				}
			}
			page := apiclient.GroupOptions{Groups: groups}
			if cmd.Flags().Changed("groups") {
				if groups < 0 {
					return withExit(exitBadInput, errors.New("--groups must not be negative"))
				}
				if groups == 0 {
					page.Groups = apiclient.NoGroups
				}
			}
			if cmd.Flags().Changed("groups-after") {
				page.GroupsAfter = &groupsAfter
			}
			if cmd.Flags().Changed("group") {
				if cmd.Flags().Changed("groups") || cmd.Flags().Changed("groups-after") {
					return withExit(exitBadInput, errors.New("--group shows one group: not with --groups or --groups-after"))
				}
				page.Group = &group
			}
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if id > 0 {
				p, err := client.Manifest(cmd.Context(), id, page)
				if err != nil {
					return apiExit(err)
				}
				if fleetName != "" && p.Manifest != nil && p.Manifest.Fleet != fleetName {
					return withExit(exitBadInput, fmt.Errorf("manifest #%d belongs to fleet %s, not %s", id, p.Manifest.Fleet, fleetName))
				}
				if asJSON {
					return writeJSON(out, p)
				}
				printManifestProgress(out, id, p)
				return nil
			}
			st, err := client.StatusWith(cmd.Context(), apiclient.StatusOptions{Fleet: fleetName, GroupOptions: page})
			if err != nil {
				return apiExit(err)
			}
			if asJSON {
				return writeJSON(out, st)
			}
			printFleetStatus(out, fleetName, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&fleetName, "fleet", "", "only this fleet (default: every fleet); with MANIFEST_ID, check that the manifest belongs to it")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's answer as JSON instead of tables")
	cmd.Flags().IntVar(&groups, "groups", 0, "show at most this many groups, in name order (default 100; 0 for none)")
	cmd.Flags().StringVar(&groupsAfter, "groups-after", "", "show the groups after this one (the next page, as status names it)")
	cmd.Flags().StringVar(&group, "group", "", `show this group alone ("" for the devices in no group)`)
	return cmd
}

// shellQuote quotes a group name for a command line, when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parseManifestID reads a MANIFEST_ID argument ("12" or "#12").
func parseManifestID(arg string) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimPrefix(arg, "#"), 10, 64)
	if err != nil || id <= 0 {
		return 0, withExit(exitBadInput, fmt.Errorf("MANIFEST_ID must be a positive number, not %q", arg))
	}
	return id, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printManifestProgress(w io.Writer, id int64, p *apiclient.Progress) {
	state := "in progress"
	if p.Done {
		state = "done"
	}
	if m := p.Manifest; m != nil {
		fmt.Fprintf(w, "manifest #%d (fleet %s, %s, %s, uploaded %s by %s)\n", id, m.Fleet, m.Mode, fleet.Plural(m.Rows, "row"),
			m.UploadedAt.Local().Format("2006-01-02 15:04:05"), m.Uploader)
	} else {
		fmt.Fprintf(w, "manifest #%d\n", id)
	}
	fmt.Fprintf(w, "%d of %s settled, %d failed: %s\n\n", p.Settled, fleet.Plural(p.Total, "device"), p.Failed, state)
	printStatusTable(w, p.ByStatus)
	if p.GroupPage != nil {
		printGroups(w, *p.GroupPage)
	}
}

// printGroups prints a page of counts by group, says that a device counts in each
// of its groups, and where the next page starts when the page is not all of them.
func printGroups(w io.Writer, page apiclient.GroupPage) {
	if len(page.ByGroup) > 0 {
		fmt.Fprintln(w)
		printMatrix(w, "GROUP", sortedKeys(page.ByGroup), page.ByGroup, groupName)
		fmt.Fprintln(w, "(a device counts in every group it belongs to: groups for connect devices, allow_groups for listen devices)")
	}
	// Every group is shown unless the answer says otherwise: a small fleet's
	// status reads as it always did.
	if page.NextGroupsAfter != nil || len(page.ByGroup) < page.Groups {
		fmt.Fprintf(w, "(%d of %s shown", len(page.ByGroup), fleet.Plural(page.Groups, "group"))
		if page.NextGroupsAfter != nil {
			fmt.Fprintf(w, "; the next ones: --groups-after %s", shellQuote(*page.NextGroupsAfter))
		}
		fmt.Fprintln(w, ")")
	}
}

func printFleetStatus(w io.Writer, fleetName string, st *apiclient.Status) {
	scope := "every fleet"
	if fleetName != "" {
		scope = "fleet " + fleetName
	}
	fmt.Fprintf(w, "%s: %s\n\n", scope, fleet.Plural(st.Total, "device"))
	printStatusTable(w, st.ByStatus)
	printGroups(w, st.GroupPage)
	if len(st.ByManifest) > 0 {
		fmt.Fprintln(w)
		rows := make([]string, len(st.ByManifest))
		counts := make(map[string]map[string]int, len(st.ByManifest))
		for i, m := range st.ByManifest {
			name := fmt.Sprintf("#%d", m.Manifest)
			if m.Fleet != "" {
				name += " (" + m.Fleet + ")"
			}
			rows[i] = name
			counts[name] = m.ByStatus
		}
		printMatrix(w, "MANIFEST", rows, counts, func(s string) string { return s })
	}
}

// printStatusTable prints one row per status with devices, in life order.
func printStatusTable(w io.Writer, byStatus map[string]int) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tDEVICES")
	for _, s := range presentStatuses(byStatus) {
		fmt.Fprintf(tw, "%s\t%d\n", s, byStatus[s])
	}
	_ = tw.Flush()
}

// printMatrix prints one row per name with its total and one column per status
// that any row has, in life order.
func printMatrix(w io.Writer, title string, rows []string, counts map[string]map[string]int, label func(string) string) {
	all := map[string]int{}
	for _, c := range counts {
		for s, n := range c {
			all[s] += n
		}
	}
	cols := presentStatuses(all)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tTOTAL", title)
	for _, s := range cols {
		fmt.Fprintf(tw, "\t%s", strings.ToUpper(s))
	}
	fmt.Fprintln(tw)
	for _, r := range rows {
		total := 0
		for _, n := range counts[r] {
			total += n
		}
		fmt.Fprintf(tw, "%s\t%d", label(r), total)
		for _, s := range cols {
			fmt.Fprintf(tw, "\t%d", counts[r][s])
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
}

// presentStatuses lists the statuses with a count, in life order, unknown ones last.
func presentStatuses(m map[string]int) []string { return progress.Ordered(m, statusOrder()) }

// formatStatus renders counts as "ready 10, failed 1" in life order.
func formatStatus(m map[string]int) string {
	if s := progress.FormatCounts(m, statusOrder()); s != "" {
		return s
	}
	return "none"
}

func groupName(g string) string {
	if g == "" {
		return "(no group)"
	}
	return oneLine(g)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
