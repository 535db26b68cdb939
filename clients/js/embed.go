// Package jsclient holds the JavaScript client's module (src/index.js) for
// Go programs that serve it, such as the local fleet's demo page. The
// client itself, its types, tests and documentation live beside this file
// (package.json, README.md); nothing else is here.
package jsclient

import _ "embed"

// Module is the client's ES module, src/index.js.
//
//go:embed src/index.js
var Module []byte
