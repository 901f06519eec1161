package console

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
)

// pageNames are the templates/NAME.html pages, each rendered inside layout.html.
var pageNames = []string{"signin", "overview", "upload", "manifest", "device", "rotation", "reconcile", "webhooks"}

var funcs = template.FuncMap{
	"label":      statusLabel,
	"join":       func(list []string) string { return strings.Join(list, "; ") },
	"when":       func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"days":       func(d time.Duration) string { return fleet.Plural(d.Hours()/24, "day") },
	"percent":    func(n, total int) string { return fmt.Sprintf("%.1f", 100*float64(n)/float64(max(total, 1))) },
	"pathEscape": url.PathEscape,
	"trigger":    triggerLabel,
	"plural":     fleet.Plural[int],
	"pluralOf":   fleet.PluralOf[int],
	"agree":      fleet.Agree[int],
	// The scripts draw bars in the same order and count the same statuses as settled.
	"statuses":        func() string { return joinStatuses(func(fleet.Status) bool { return true }) },
	"settledStatuses": func() string { return joinStatuses(fleet.Status.Settled) },
}

func joinStatuses(keep func(fleet.Status) bool) string {
	var list []string
	for _, s := range fleet.Statuses {
		if keep(s) {
			list = append(list, string(s))
		}
	}
	return strings.Join(list, ",")
}

func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// triggerLabel says who started a reconcile run.
func triggerLabel(trigger string) string {
	switch trigger {
	case store.ReconcileBySchedule:
		return "the schedule"
	case store.ReconcileByRequest:
		return "a request (vncfleet reconcile or this console)"
	}
	return trigger
}

// statusLabel is how a status reads to a person.
func statusLabel(status string) string { return strings.ReplaceAll(status, "_", " ") }

// view is what every page gets.
type view struct {
	Title   string
	Page    string // the nav entry to mark current
	Session *session
	Flash   string
	Error   string
	Data    any
}

func (v view) Can(role string) bool { return v.Session != nil && v.Session.has(role) }

func (c *Console) render(w http.ResponseWriter, status int, name string, v view) {
	securityHeaders(w)
	// Pages hold fleet data and the CSRF token: never stored by the browser or a proxy.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := c.pages[name].ExecuteTemplate(w, "layout", v); err != nil {
		c.cfg.Logger.Error("console page failed", "page", name, "err", err)
	}
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, s *session)

// withSession serves h to a signed-in operator, and sends anyone else to sign in.
func (c *Console) withSession(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := c.session(w, r)
		if !ok {
			return
		}
		h(w, r, s)
	}
}

// session is the request's session; without one (ok false) the request was answered:
// sent to sign in, or told that sessions cannot be read.
func (c *Console) session(w http.ResponseWriter, r *http.Request) (_ *session, ok bool) {
	s, err := c.sessions.get(r)
	if err != nil {
		c.cfg.Logger.Error("console session lookup failed", "err", err)
		c.render(w, http.StatusServiceUnavailable, "signin", view{Title: "Sign in",
			Error: "The server cannot read sessions right now. Try again shortly.", Data: signinData{Next: safeNext(r.URL.RequestURI())}})
		return nil, false
	}
	if s == nil {
		c.toSignin(w, r)
		return nil, false
	}
	return s, true
}

func (c *Console) toSignin(w http.ResponseWriter, r *http.Request) {
	q := url.Values{"next": {r.URL.RequestURI()}}
	if _, err := r.Cookie(sessionCookie); err == nil {
		q.Set("expired", "1")
	}
	http.Redirect(w, r, "/signin?"+q.Encode(), http.StatusSeeOther)
}

// withForm serves a state-changing form post: signed in, same origin, and carrying
// the session's CSRF token.
func (c *Console) withForm(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := c.session(w, r)
		if !ok {
			return
		}
		if !sameOrigin(r) || !s.csrfOK(r.PostFormValue("csrf")) {
			http.Error(w, "This form has expired or came from another site: reload the page and try again.", http.StatusForbidden)
			return
		}
		h(w, r, s)
	}
}

// sameOrigin rejects a request whose Origin header names another site (browsers send
// it with every POST).
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host
}

// safeNext keeps a post-sign-in redirect on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}

type signinData struct{ Next string }

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Sign in", Data: signinData{Next: safeNext(r.URL.Query().Get("next"))}}
	if r.URL.Query().Get("expired") != "" {
		v.Flash = "Your session has ended. Sign in again to go on."
	}
	c.render(w, http.StatusOK, "signin", v)
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.PostFormValue("next"))
	token := strings.TrimSpace(r.PostFormValue("token"))
	fail := func(status int, msg string) {
		c.render(w, status, "signin", view{Title: "Sign in", Error: msg, Data: signinData{Next: next}})
	}
	if !sameOrigin(r) {
		fail(http.StatusForbidden, "This sign-in form came from another site.")
		return
	}
	if token == "" {
		fail(http.StatusBadRequest, "Enter your access token.")
		return
	}
	var me struct {
		Name  string   `json:"name"`
		Roles []string `json:"roles"`
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "/v1/me", nil)
	if err == nil {
		req.RemoteAddr = r.RemoteAddr
		req.Header.Set("Authorization", "Bearer "+token)
		err = c.serve(req, http.MethodGet, "/v1/me", &me)
	}
	var apiErr *apiError
	switch {
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized:
		fail(http.StatusUnauthorized, "That token is not known. Check it and try again.")
		return
	case err != nil:
		c.cfg.Logger.Error("console sign-in failed", "err", err)
		fail(http.StatusServiceUnavailable, "The server cannot sign you in right now. Try again shortly.")
		return
	}
	if _, err := c.sessions.start(w, r, me.Name, me.Roles); err != nil {
		c.cfg.Logger.Error("console sign-in failed", "err", err)
		fail(http.StatusServiceUnavailable, "The server cannot sign you in right now. Try again shortly.")
		return
	}
	c.cfg.Logger.Info("console sign-in", "name", me.Name, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, s *session) {
	if err := c.sessions.end(w, r); err != nil {
		c.cfg.Logger.Error("console sign-out failed", "name", s.Name(), "err", err)
		http.Error(w, "The server could not end the session. Try again shortly.", http.StatusServiceUnavailable)
		return
	}
	c.cfg.Logger.Info("console sign-out", "name", s.Name(), "remote", r.RemoteAddr)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// failPage renders an API failure as a page.
func (c *Console) failPage(w http.ResponseWriter, name string, v view, err error) {
	status, msg := answerOf(err)
	v.Error = msg
	c.render(w, status, name, v)
}

// --- fleets overview ---

// segment is one status's part of a stacked bar.
type segment struct {
	Status string
	Count  int
	X, W   float64 // where the segment starts and how wide it is, of a bar 1000 wide
}

// bar is a stacked bar of counts by status, in life order.
type bar struct {
	Total    int
	Settled  int
	Segments []segment
}

// Count is how many of the bar's devices have status.
func (b bar) Count(status string) int {
	for _, s := range b.Segments {
		if s.Status == status {
			return s.Count
		}
	}
	return 0
}

// MarshalJSON gives a page's script the bar as it draws one: the counts by status,
// with the total and the settled ones.
func (b bar) MarshalJSON() ([]byte, error) {
	counts := map[string]int{}
	for _, s := range b.Segments {
		counts[s.Status] = s.Count
	}
	return json.Marshal(struct {
		Total   int            `json:"total"`
		Settled int            `json:"settled"`
		Counts  map[string]int `json:"counts"`
	}{b.Total, b.Settled, counts})
}

func newBar(counts map[string]int) bar {
	var b bar
	for _, st := range fleet.Statuses {
		if n := counts[string(st)]; n > 0 {
			b.Segments = append(b.Segments, segment{Status: string(st), Count: n})
			b.Total += n
			if st.Settled() {
				b.Settled += n
			}
		}
	}
	x := 0.0
	for i := range b.Segments {
		b.Segments[i].X = x
		b.Segments[i].W = 1000 * float64(b.Segments[i].Count) / float64(b.Total)
		x += b.Segments[i].W
	}
	return b
}

type manifestRow struct {
	store.Manifest
	State string `json:"state"`
	Bar   bar    `json:"bar"`
}

type fleetView struct {
	Name      string        `json:"name"`
	Bar       bar           `json:"bar"`
	Manifests []manifestRow `json:"manifests"`
	// Rotation is the fleet's line of GET /v1/rotation; the page's script reads that
	// itself (overviewJSON leaves it out).
	Rotation *server.FleetRotation `json:"-"`
	// Reconciled is what the last reconcile run found of this fleet's devices (nil
	// when there is no such run).
	Reconciled *store.FleetFindings `json:"reconciled"`
}

// overviewView is the fleets page: each fleet, when rotation runs next and how the
// last reconcile went.
type overviewView struct {
	Fleets     []fleetView `json:"fleets"`
	NextRun    *time.Time  `json:"-"`
	NoRotation bool        `json:"-"` // the API could not say
	// LastReconcile is the newest recorded reconcile run; NoReconcile says why there is
	// none to show.
	LastReconcile *store.ReconcileRun `json:"lastReconcile"`
	NoReconcile   string              `json:"noReconcile"`
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	v := view{Title: "Fleets", Page: "fleets", Session: s}
	ov, err := c.overviewOf(r, s)
	if err != nil {
		c.failPage(w, "overview", v, err)
		return
	}
	var rot server.RotationOverview
	if err := c.call(r, s, http.MethodGet, "/v1/rotation", nil, &rot); err != nil {
		ov.NoRotation = true
	}
	ov.NextRun = rot.NextRun
	for i := range ov.Fleets {
		for _, fr := range rot.Fleets {
			if fr.Fleet == ov.Fleets[i].Name {
				ov.Fleets[i].Rotation = &fr
			}
		}
	}
	v.Data = ov
	c.render(w, http.StatusOK, "overview", v)
}

// overviewJSON is the fleets page's data for its script, which redraws the page from
// it (GET /ui/api/overview): everything but the rotation lines. Those come from GET
// /v1/rotation, which counts every device holding a password (a second at a million
// devices), so the script reads it less often than this.
func (c *Console) overviewJSON(w http.ResponseWriter, r *http.Request) {
	s, ok := c.apiSession(w, r)
	if !ok {
		return
	}
	ov, err := c.overviewOf(r, s)
	if err != nil {
		status, msg := answerOf(err)
		writeJSONError(w, status, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(ov)
}

// overviewOf reads, through the API, every fleet with manifests, with its devices by
// status and its manifests with their state, and how the last reconcile went.
func (c *Console) overviewOf(r *http.Request, s *session) (overviewView, error) {
	var ov overviewView
	var ms []store.Manifest
	var st store.FleetStatus
	if err := c.call(r, s, http.MethodGet, "/v1/manifests", nil, &ms); err != nil {
		return ov, err
	}
	// The counts of every manifest; no group (the page shows none).
	if err := c.call(r, s, http.MethodGet, "/v1/status?groups=0", nil, &st); err != nil {
		return ov, err
	}
	byFleet := map[string]map[string]int{}
	byManifest := map[int64]map[string]int{}
	for _, m := range st.ByManifest {
		if byFleet[m.Fleet] == nil {
			byFleet[m.Fleet] = map[string]int{}
		}
		for k, n := range m.ByStatus {
			byFleet[m.Fleet][k] += n
		}
		byManifest[m.Manifest] = m.ByStatus
	}
	fleets := map[string]*fleetView{}
	for _, m := range ms {
		f := fleets[m.Fleet]
		if f == nil {
			f = &fleetView{Name: m.Fleet, Bar: newBar(byFleet[m.Fleet])}
			fleets[m.Fleet] = f
		}
		row := manifestRow{Manifest: m, Bar: newBar(byManifest[m.ID])}
		row.State = manifestState(m, row.Bar)
		f.Manifests = append(f.Manifests, row)
	}
	ov.LastReconcile, ov.NoReconcile = c.lastReconcile(r, s, false)
	if run := ov.LastReconcile; run != nil && run.Error == "" {
		for name, f := range fleets {
			found := run.ByFleet[name]
			f.Reconciled = &found
		}
	}
	ov.Fleets = []fleetView{}
	for _, name := range slices.Sorted(maps.Keys(fleets)) {
		ov.Fleets = append(ov.Fleets, *fleets[name])
	}
	return ov, nil
}

// manifestState is a manifest's state in words. (It says "superseded" when later
// manifests took over all its devices.)
func manifestState(m store.Manifest, b bar) string {
	switch {
	case m.CancelledAt != nil:
		return "cancelled"
	case b.Total == 0:
		return "superseded"
	case b.Settled == b.Total:
		return "done"
	}
	return "in progress"
}

// fleetNames lists the fleets that have manifests, for pickers.
func (c *Console) fleetNames(r *http.Request, s *session) []string {
	var ms []store.Manifest
	if c.call(r, s, http.MethodGet, "/v1/manifests", nil, &ms) != nil {
		return nil
	}
	set := map[string]bool{}
	for _, m := range ms {
		set[m.Fleet] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// --- upload ---

func (c *Console) uploadPage(w http.ResponseWriter, r *http.Request, s *session) {
	c.render(w, http.StatusOK, "upload", view{Title: "Upload a manifest", Page: "upload", Session: s, Data: c.fleetNames(r, s)})
}

// --- manifest progress ---

type groupBar struct {
	Name string
	Bar  bar
}

type manifestView struct {
	P        store.Progress
	State    string
	Bar      bar
	Groups   []groupBar
	Pages    groupPages
	Failures []store.Failure
}

// groupPages is where the page of groups shown sits among the manifest's groups, and
// how to reach the others: the API pages them (GET /v1/manifests/{id}, groups_after
// and group, by the status's rule), and the page's links and stream ask for the same
// page.
type groupPages struct {
	Shown, Total int
	After        *string // the page starts after this group; nil for the first page
	Only         *string // the group shown alone
	Next         *string // the next page's groups_after; nil on the last
	Query        string  // the page's query, for its stream: "" for the first page
}

// More is how many groups follow the first page; 0 on later pages, where the API
// does not say how many groups came before.
func (g groupPages) More() int {
	if g.After != nil || g.Only != nil {
		return 0
	}
	return max(g.Total-g.Shown, 0)
}

// groupPageQuery keeps, of a manifest page's query, what selects its page of groups.
func groupPageQuery(q url.Values) url.Values {
	kept := url.Values{}
	for _, name := range []string{"groups_after", "group"} {
		if q.Has(name) {
			kept.Set(name, q.Get(name))
		}
	}
	return kept
}

func (c *Console) manifestPage(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	v := view{Title: "Manifest #" + id, Page: "fleets", Session: s}
	var mv manifestView
	page := groupPageQuery(r.URL.Query())
	path := "/v1/manifests/" + url.PathEscape(id)
	if len(page) > 0 {
		path += "?" + page.Encode()
	}
	if err := c.call(r, s, http.MethodGet, path, nil, &mv.P); err != nil {
		c.failPage(w, "manifest", v, err)
		return
	}
	// The counters say whether anything failed: the list is read only then.
	if mv.P.Failed > 0 {
		var f struct {
			Failures []store.Failure `json:"failures"`
		}
		if err := c.call(r, s, http.MethodGet, "/v1/manifests/"+url.PathEscape(id)+"/failures", nil, &f); err != nil {
			c.failPage(w, "manifest", v, err)
			return
		}
		mv.Failures = f.Failures
	}
	mv.Bar = newBar(mv.P.ByStatus)
	mv.State = manifestState(mv.P.Manifest, mv.Bar)
	if g := mv.P.GroupPage; g != nil {
		for _, name := range slices.Sorted(maps.Keys(g.ByGroup)) {
			mv.Groups = append(mv.Groups, groupBar{Name: cmp.Or(name, "(no group)"), Bar: newBar(g.ByGroup[name])})
		}
		mv.Pages = groupPages{Shown: len(g.ByGroup), Total: g.Groups, Next: g.NextGroupsAfter, Query: page.Encode()}
	}
	if page.Has("group") {
		only := page.Get("group")
		mv.Pages.Only = &only
	} else if page.Has("groups_after") {
		after := page.Get("groups_after")
		mv.Pages.After = &after
	}
	v.Data = mv
	c.render(w, http.StatusOK, "manifest", v)
}

// --- device detail ---

// deviceView is the API's device answer: the device and its rotation forecast
// (lifecycle.Config.NextRotation's, absent for a device without a password).
type deviceView struct {
	store.DeviceDetail
	Rotation *lifecycle.Forecast `json:"rotation"`
}

func (c *Console) devicePage(w http.ResponseWriter, r *http.Request, s *session) {
	fleetName, deviceID := r.PathValue("fleet"), r.PathValue("device")
	v := view{Title: "Device " + deviceID, Page: "fleets", Session: s}
	var d deviceView
	if err := c.call(r, s, http.MethodGet, "/v1/fleets/"+url.PathEscape(fleetName)+"/devices/"+url.PathEscape(deviceID), nil, &d); err != nil {
		c.failPage(w, "device", v, err)
		return
	}
	v.Data = d
	c.render(w, http.StatusOK, "device", v)
}

// --- rotation ---

type rotationView struct {
	Fleets    []string
	Key       string
	Scheduled string
	Status    server.RotationOverview
	MaxAge    time.Duration
}

func (c *Console) rotationPage(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	v := view{Title: "Password rotation", Page: "rotation", Session: s}
	rv := rotationView{Fleets: c.fleetNames(r, s), Key: q.Get("key"), Scheduled: q.Get("scheduled")}
	if err := c.call(r, s, http.MethodGet, "/v1/rotation", nil, &rv.Status); err != nil {
		v.Data = rv
		c.failPage(w, "rotation", v, err)
		return
	}
	rv.MaxAge = time.Duration(rv.Status.MaxAgeSeconds * float64(time.Second))
	v.Data = rv
	c.render(w, http.StatusOK, "rotation", v)
}

func (c *Console) rotateNow(w http.ResponseWriter, r *http.Request, s *session) {
	q := url.Values{}
	if f := r.PostFormValue("fleet"); f != "" {
		q.Set("fleet", f)
	}
	if r.PostFormValue("all") != "" {
		q.Set("all", "true")
	}
	var res struct {
		Scheduled int    `json:"scheduled"`
		Key       string `json:"key"`
	}
	if err := c.call(r, s, http.MethodPost, "/v1/rotate?"+q.Encode(), nil, &res); err != nil {
		c.failPage(w, "rotation", view{Title: "Password rotation", Page: "rotation", Session: s,
			Data: rotationView{Fleets: c.fleetNames(r, s)}}, err)
		return
	}
	http.Redirect(w, r, "/rotation?"+url.Values{"key": {res.Key}, "scheduled": {strconv.Itoa(res.Scheduled)}}.Encode(), http.StatusSeeOther)
}

// --- reconcile ---

// reconcileReport is a reconcile run's report as the page shows it; counts, when
// set, are the full lengths of lists the stored report keeps the first entries of.
type reconcileReport struct {
	reconcile.Report
	counts map[string]int
}

// Sections lists the report's findings with what each means, in the order an
// operator reads them.
func (rep reconcileReport) Sections() []reportSection {
	list := []reportSection{
		{"Vanished", "addresses gone from the cloud: created again", rep.Vanished, "vanished", 0},
		{"Drifted", "specs changed outside vncfleet: put back", rep.Drifted, "drifted", 0},
		{"Adopted", "addresses of lost creates, given to their device", rep.Adopted, "adopted", 0},
		{"Orphans deleted", "addresses of lost creates no device needed", rep.DeletedOrphans, "deletedOrphans", 0},
		{"Creates in flight", "devices whose create may still be in progress at VNC Cloud: settled by a later run", rep.CreatesInFlight, "createsInFlight", 0},
		{"Addresses in flight", "unknown addresses a recent create may have made: settled by a later run", rep.InFlight, "inFlight", 0},
		{"Ambiguous", "unknown addresses that lost creates may have made, but more than they could have: left alone", rep.Ambiguous, "ambiguous", 0},
		{"Foreign", "addresses vncfleet did not create", rep.Foreign, "foreign", 0},
		{"Foreign deleted", "foreign addresses deleted by policy", rep.DeletedForeign, "deletedForeign", 0},
		{"Errors", "what could not be settled", rep.Errors, "errors", 0},
	}
	for i := range list {
		list[i].Total = len(list[i].Items)
		if n, ok := rep.counts[list[i].key]; ok {
			list[i].Total = n
		}
	}
	return list
}

type reportSection struct {
	Name, Meaning string
	Items         []string
	key           string
	Total         int // Items may be the first of them
}

// reconcileView is the reconcile page: the report shown (the run just started from
// the page, or the last one recorded) and the recent runs.
type reconcileView struct {
	Run     *store.ReconcileRun // the recorded run shown; nil for a run just started here
	Report  *reconcileReport
	Runs    []store.ReconcileRun
	NoRuns  string // why there is no history to show
	Started bool   // the report is of the run this page just started
}

// lastReconcile is the newest recorded run, with its report when withReport; nil when
// there is none or it could not be read (why says which), or when the caller may not
// read it (why is empty).
func (c *Console) lastReconcile(r *http.Request, s *session, withReport bool) (run *store.ReconcileRun, why string) {
	var runs struct {
		Runs []store.ReconcileRun `json:"runs"`
	}
	var err error
	if withReport {
		runs.Runs = make([]store.ReconcileRun, 1)
		err = c.call(r, s, http.MethodGet, "/v1/reconcile/runs/last", nil, &runs.Runs[0])
	} else {
		err = c.call(r, s, http.MethodGet, "/v1/reconcile/runs?limit=1", nil, &runs)
	}
	var apiErr *apiError
	switch {
	case err == nil && len(runs.Runs) > 0:
		return &runs.Runs[0], ""
	case err == nil, errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
		return nil, "No reconcile run has been recorded yet."
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusForbidden:
		return nil, "" // a fleet-limited token: the report spans the account
	case errors.As(err, &apiErr):
		return nil, apiErr.Message
	}
	return nil, "The server could not answer: " + err.Error()
}

// reportOf decodes a recorded run's report; nil for a run that failed.
func reportOf(run *store.ReconcileRun) (*reconcileReport, error) {
	if run == nil || run.Report == nil {
		return nil, nil
	}
	rep := &reconcileReport{counts: run.Counts}
	if err := json.Unmarshal(run.Report, &rep.Report); err != nil {
		return nil, fmt.Errorf("reconcile run %d: decoding its report: %w", run.ID, err)
	}
	return rep, nil
}

func (c *Console) reconcilePage(w http.ResponseWriter, r *http.Request, s *session) {
	v := view{Title: "Reconcile", Page: "reconcile", Session: s}
	c.renderReconcile(w, r, http.StatusOK, v, nil)
}

// renderReconcile renders the page with started, the report of a run just started,
// or else the last recorded run's.
func (c *Console) renderReconcile(w http.ResponseWriter, r *http.Request, status int, v view, started *reconcileReport) {
	var rv reconcileView
	var runs struct {
		Runs []store.ReconcileRun `json:"runs"`
	}
	if err := c.call(r, v.Session, http.MethodGet, "/v1/reconcile/runs", nil, &runs); err != nil {
		_, rv.NoRuns = answerOf(err)
	}
	rv.Runs = runs.Runs
	if started != nil {
		rv.Report, rv.Started = started, true
	} else if rv.NoRuns == "" && len(rv.Runs) > 0 {
		run, why := c.lastReconcile(r, v.Session, true)
		if run == nil {
			rv.NoRuns = why
		}
		rep, err := reportOf(run)
		if err != nil {
			v.Data = rv
			c.failPage(w, "reconcile", v, err)
			return
		}
		rv.Run, rv.Report = run, rep
	}
	v.Data = rv
	c.render(w, status, "reconcile", v)
}

func (c *Console) reconcileNow(w http.ResponseWriter, r *http.Request, s *session) {
	v := view{Title: "Reconcile", Page: "reconcile", Session: s}
	path := "/v1/reconcile"
	if r.PostFormValue("dry_run") != "" {
		path += "?dry_run=true"
	}
	var rep reconcileReport
	if err := c.call(r, s, http.MethodPost, path, nil, &rep.Report); err != nil {
		status, msg := answerOf(err)
		v.Error = msg
		c.renderReconcile(w, r, status, v, nil)
		return
	}
	c.renderReconcile(w, r, http.StatusOK, v, &rep)
}

// --- webhooks ---

func (c *Console) webhooksPage(w http.ResponseWriter, r *http.Request, s *session) {
	v := view{Title: "Webhooks", Page: "webhooks", Session: s}
	if id := r.URL.Query().Get("redelivered"); id != "" {
		v.Flash = "Event " + id + " will be delivered again."
	}
	var wv store.WebhookOverview
	if err := c.call(r, s, http.MethodGet, "/v1/webhooks", nil, &wv); err != nil {
		c.failPage(w, "webhooks", v, err)
		return
	}
	v.Data = wv
	c.render(w, http.StatusOK, "webhooks", v)
}

func (c *Console) redeliver(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if err := c.call(r, s, http.MethodPost, "/v1/webhooks/events/"+url.PathEscape(id)+"/redeliver", nil, nil); err != nil {
		c.failPage(w, "webhooks", view{Title: "Webhooks", Page: "webhooks", Session: s}, err)
		return
	}
	http.Redirect(w, r, "/webhooks?redelivered="+url.QueryEscape(id), http.StatusSeeOther)
}
