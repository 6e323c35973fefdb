// Package api holds the NATS interface of idenfy-worker as an AsyncAPI 3.0
// document, asyncapi.yaml, for callers in any language: every subject,
// header, message schema and error code of the contract that package
// messages implements in Go.
//
// The document is embedded so that Go tooling and tests read the same bytes
// that callers in other languages are given; its tests hold it to the
// messages types and to the worker's real answers.
package api

import _ "embed"

// AsyncAPI is the content of asyncapi.yaml.
//
//go:embed asyncapi.yaml
var AsyncAPI []byte
