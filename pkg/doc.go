// Package pkg is the root of the shared module: generated API code (api/),
// the gRPC server kit, telemetry, discovery and the Engine service host that
// every worker kind builds on. It builds with CGO_ENABLED=0 and never imports
// a service.
package pkg
