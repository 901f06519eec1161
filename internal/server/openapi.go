package server

import (
	"net/http"

	"github.com/vncfleet/vncfleet/docs"
)

// serveOpenAPI publishes docs/openapi.yaml, unauthenticated: it describes the API,
// it holds nothing of the fleet.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(docs.OpenAPI)
}
