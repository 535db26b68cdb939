package router

import (
	"bytes"
	_ "embed"
)

// openAPI is the OpenAPI 3 description of the HTTP API, served at
// GET /v1/openapi.json.
//
//go:embed openapi.json
var openAPIFile []byte

var openAPI = bytes.TrimSpace(openAPIFile)

// OpenAPI returns the OpenAPI 3 description of the HTTP API (a copy).
func OpenAPI() []byte { return append([]byte(nil), openAPI...) }
