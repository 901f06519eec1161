package server_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/vncfleet/vncfleet/docs"
	"github.com/vncfleet/vncfleet/internal/servetest"
)

// openAPI is docs/openapi.yaml, decoded.
func openAPI(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(docs.OpenAPI, &doc))
	require.Equal(t, "3.1.0", doc["openapi"])
	return doc
}

// registeredRoutes reads the patterns the server registers on its mux from its
// source: every s.mux.Handle / HandleFunc call with a literal pattern.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	var routes []string
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			if recv, ok := sel.X.(*ast.SelectorExpr); !ok || recv.Sel.Name != "mux" {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			require.True(t, ok, "%s: a route pattern that is not a literal", fset.Position(call.Pos()))
			pattern, err := strconv.Unquote(lit.Value)
			require.NoError(t, err)
			routes = append(routes, pattern)
			return true
		})
	}
	slices.Sort(routes)
	return routes
}

// Every route the server registers is in docs/openapi.yaml with its method, and
// every operation there is a route.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	t.Parallel()
	doc := openAPI(t)
	var documented []string
	for path, item := range doc["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(documented)
	routes := registeredRoutes(t)
	require.NotEmpty(t, routes)
	require.Equal(t, routes, documented)
}

// A few real answers of a running server match the schemas of docs/openapi.yaml.
func TestOpenAPIMatchesRealAnswers(t *testing.T) {
	t.Parallel()
	doc := openAPI(t)
	st := servetest.Start(t, nil)
	v := &validator{t: t, doc: doc}
	call := func(method, path, token, body string, status int) any {
		t.Helper()
		req, err := http.NewRequest(method, st.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", "text/csv")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, status, resp.StatusCode, "%s %s: %s", method, path, data)
		var answer any
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			require.NoError(t, json.Unmarshal(data, &answer))
			v.answer(method, path, status, answer)
		}
		return answer
	}

	raw := call("GET", "/v1/openapi.yaml", "", "", 200)
	require.Nil(t, raw)
	call("GET", "/v1/me", servetest.ReaderToken, "", 200)
	call("GET", "/v1/me", "", "", 401)
	csv := "device_id,action,groups,allow_groups,allow_devices,state,location\n" +
		"cam-1,connect,line-a,,,,hall\ncam-2,connect,line-b,,,,hall\nsrv-1,listen,,line-a,cam-1,,hall\n"
	call("POST", "/v1/manifests?fleet=f&dry_run=true", servetest.AdminToken, csv, 200)
	call("POST", "/v1/manifests?fleet=f", servetest.AdminToken, "device_id,action\nx,teleport\n", 422)
	created := call("POST", "/v1/manifests?fleet=f", servetest.AdminToken, csv, 201).(map[string]any)
	id := int64(created["manifest"].(map[string]any)["id"].(float64))
	m := "/v1/manifests/" + strconv.FormatInt(id, 10)

	// The event stream: a progress event per change, the schema's shape, and done.
	events := readEvents(t, st.URL+m+"/events", servetest.ReaderToken, "7")
	require.NotEmpty(t, events)
	require.Equal(t, "8", events[0].id, "ids go on from Last-Event-ID")
	for _, ev := range events[:len(events)-1] {
		require.Equal(t, "progress", ev.event)
		var data any
		require.NoError(t, json.Unmarshal([]byte(ev.data), &data))
		v.check("#/components/schemas/ProgressEvent", data, "event "+ev.id)
	}
	require.Equal(t, "done", events[len(events)-1].event)

	call("GET", m, servetest.ReaderToken, "", 200)
	// A manifest's progress pages its groups by the status's rule.
	mpage := call("GET", m+"?groups=1", servetest.ReaderToken, "", 200).(map[string]any)
	require.Equal(t, "line-a", mpage["nextGroupsAfter"])
	require.Equal(t, float64(2), mpage["groups"])
	call("GET", m+"?no_groups=true", servetest.ReaderToken, "", 200)
	call("GET", m+"?no_groups=true&group=line-a", servetest.ReaderToken, "", 400)
	call("GET", "/v1/manifests?fleet=f", servetest.ReaderToken, "", 200)
	call("GET", "/v1/status", servetest.ReaderToken, "", 200)
	// A page of one of the two groups names the next; one group alone; bad pages.
	page := call("GET", "/v1/status?fleet=f&groups=1", servetest.ReaderToken, "", 200).(map[string]any)
	require.Equal(t, "line-a", page["nextGroupsAfter"])
	require.Equal(t, float64(2), page["groups"])
	require.Len(t, page["byGroup"], 1)
	last := call("GET", "/v1/status?fleet=f&groups=1&groups_after=line-a", servetest.ReaderToken, "", 200).(map[string]any)
	require.Len(t, last["byGroup"], 1)
	require.Contains(t, last["byGroup"], "line-b")
	require.NotContains(t, last, "nextGroupsAfter")
	one := call("GET", "/v1/status?fleet=f&group=line-a", servetest.ReaderToken, "", 200).(map[string]any)
	require.Len(t, one["byGroup"], 1)
	require.Contains(t, one["byGroup"], "line-a")
	call("GET", "/v1/status?fleet=f&groups=many", servetest.ReaderToken, "", 400)
	call("GET", "/v1/status?fleet=f&groups=10001", servetest.ReaderToken, "", 400)
	call("GET", "/v1/status?fleet=f&group=line-a&groups=2", servetest.ReaderToken, "", 400)
	call("GET", m+"/failures", servetest.ReaderToken, "", 200)
	call("GET", "/v1/fleets/f/devices/srv-1", servetest.ReaderToken, "", 200)
	call("GET", "/v1/fleets/f/devices/srv-1/credentials", servetest.AdminToken, "", 200)
	call("GET", "/v1/fleets/f/devices/srv-1/credentials", servetest.ReaderToken, "", 403)
	call("GET", "/v1/fleets/f/devices/nobody", servetest.ReaderToken, "", 404)
	call("POST", m+"/cancel", servetest.AdminToken, "", 200)
	call("GET", "/v1/webhooks", servetest.ReaderToken, "", 200)
	call("GET", "/v1/rotation", servetest.ReaderToken, "", 200)
	call("GET", "/v1/reconcile/runs/last", servetest.ReaderToken, "", 404)
	call("POST", "/v1/reconcile?dry_run=true", servetest.AdminToken, "", 200)
	call("GET", "/v1/reconcile/runs/last", servetest.ReaderToken, "", 200)
	call("GET", "/v1/reconcile/runs?limit=5", servetest.ReaderToken, "", 200)
	call("GET", "/v1/reconcile/runs?limit=0", servetest.ReaderToken, "", 400)
	require.GreaterOrEqual(t, v.checked, 19)
}

type sseEvent struct{ id, event, data string }

// readEvents reads an event stream until its done event.
func readEvents(t *testing.T, url, token, lastID string) []sseEvent {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Last-Event-ID", lastID)
	client := &http.Client{Timeout: 2 * time.Minute}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.event != "" {
				out = append(out, cur)
				if cur.event == "done" {
					return out
				}
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		}
	}
	t.Fatalf("the stream ended without a done event: %v", sc.Err())
	return nil
}

// validator checks JSON values against the document's schemas: the subset of JSON
// Schema the document uses (type, properties, required, additionalProperties, items,
// enum, propertyNames, minimum, $ref).
type validator struct {
	t       *testing.T
	doc     map[string]any
	checked int
}

// answer checks an answer against the schema the document gives its operation and status.
func (v *validator) answer(method, path string, status int, answer any) {
	v.t.Helper()
	op := v.operation(method, path)
	responses := op["responses"].(map[string]any)
	r, ok := responses[strconv.Itoa(status)].(map[string]any)
	require.True(v.t, ok, "%s %s: status %d is not documented", method, path, status)
	if ref, ok := r["$ref"].(string); ok {
		r = v.resolve(ref)
	}
	schema := r["content"].(map[string]any)["application/json"].(map[string]any)["schema"]
	v.validate(schema, answer, fmt.Sprintf("%s %s %d", method, path, status))
	v.checked++
}

func (v *validator) check(ref string, value any, where string) {
	v.t.Helper()
	v.validate(map[string]any{"$ref": ref}, value, where)
}

// operation finds the documented operation a concrete path matches.
func (v *validator) operation(method, path string) map[string]any {
	v.t.Helper()
	path, _, _ = strings.Cut(path, "?")
	for pattern, item := range v.doc["paths"].(map[string]any) {
		if matchPath(pattern, path) {
			if op, ok := item.(map[string]any)[strings.ToLower(method)].(map[string]any); ok {
				return op
			}
		}
	}
	v.t.Fatalf("%s %s is not documented", method, path)
	return nil
}

func matchPath(pattern, path string) bool {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return false
	}
	for i := range ps {
		if !strings.HasPrefix(ps[i], "{") && ps[i] != xs[i] {
			return false
		}
	}
	return true
}

func (v *validator) resolve(ref string) map[string]any {
	v.t.Helper()
	node := any(v.doc)
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		node = node.(map[string]any)[part]
	}
	require.NotNil(v.t, node, "unresolved %s", ref)
	return node.(map[string]any)
}

func (v *validator) validate(schemaNode any, value any, where string) {
	v.t.Helper()
	schema := schemaNode.(map[string]any)
	if ref, ok := schema["$ref"].(string); ok {
		v.validate(v.resolve(ref), value, where)
		return
	}
	if t, ok := schema["type"]; ok {
		var types []string
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, x.(string))
			}
		}
		require.True(v.t, slices.Contains(types, jsonType(value)) || (jsonType(value) == "integer" && slices.Contains(types, "number")),
			"%s: %v is %s, not %v", where, value, jsonType(value), types)
	}
	if enum, ok := schema["enum"].([]any); ok {
		require.Contains(v.t, enum, value, "%s", where)
	}
	if minimum, ok := schema["minimum"]; ok {
		require.GreaterOrEqual(v.t, value.(float64), toFloat(minimum), "%s", where)
	}
	switch value := value.(type) {
	case map[string]any:
		props, _ := schema["properties"].(map[string]any)
		for _, r := range listOf(schema["required"]) {
			require.Contains(v.t, value, r, "%s: required %q missing", where, r)
		}
		for k, x := range value {
			if names, ok := schema["propertyNames"].(map[string]any); ok {
				v.validate(names, k, where+" key")
			}
			if p, ok := props[k]; ok {
				v.validate(p, x, where+"."+k)
				continue
			}
			switch extra := schema["additionalProperties"].(type) {
			case bool:
				require.True(v.t, extra, "%s: %q is not in the schema", where, k)
			case map[string]any:
				v.validate(extra, x, where+"."+k)
			}
		}
	case []any:
		if items, ok := schema["items"]; ok {
			for i, x := range value {
				v.validate(items, x, fmt.Sprintf("%s[%d]", where, i))
			}
		}
	}
}

func listOf(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, x := range list {
		out = append(out, x.(string))
	}
	return out
}

func toFloat(v any) float64 {
	switch v := v.(type) {
	case int:
		return float64(v)
	case float64:
		return v
	}
	return 0
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		if v == float64(int64(v)) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
