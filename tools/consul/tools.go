//go:build tools

// Package tools pins the Consul agent binary.
package tools

import _ "github.com/hashicorp/consul"
