// Package docs embeds the documents the binary serves: the OpenAPI description of
// the HTTP API.
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml, the HTTP API as OpenAPI 3.1.
//
//go:embed openapi.yaml
var OpenAPI []byte
