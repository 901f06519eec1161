// Package configs holds the example files: the config showing every setting, and the
// example manifest that `vncfleet demo` provisions.
package configs

import _ "embed"

// ExampleManifest is example-manifest.csv: two factory lines of viewers and servers.
//
//go:embed example-manifest.csv
var ExampleManifest []byte
