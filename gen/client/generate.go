// Package client is the Go client SDK generated from openapi/orchestratord.yaml. Do not edit;
// run `make generate`.
package client

//go:generate go tool oapi-codegen -config client.cfg.yaml ../../openapi/orchestratord.yaml
