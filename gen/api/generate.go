// Package api is generated from openapi/orchestratord.yaml: models, the echo strict server
// interface and the embedded spec. Do not edit; run `make generate`.
package api

//go:generate go tool oapi-codegen -config types.cfg.yaml ../../openapi/orchestratord.yaml
//go:generate go tool oapi-codegen -config server.cfg.yaml ../../openapi/orchestratord.yaml
