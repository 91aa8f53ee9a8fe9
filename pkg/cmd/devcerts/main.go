// Command devcerts writes a development CA and one mTLS certificate per mesh
// role (router, engine, provider-proxy, admin, client), each carrying its
// identity as a URI SAN (spiffe://llmrouter/ROLE). An existing CA in the
// directory is reused, so roles can be added later.
//
//	devcerts -out certs
//	devcerts -out certs -hosts router.internal,10.0.0.5 router
//
// Not for production: a real deployment takes its certificates from its own
// CA (cert-manager, SPIRE, Vault).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/llm-runner-router/llmrouter/pkg/mtls"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "devcerts:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("devcerts", flag.ContinueOnError)
	out := fs.String("out", "certs", "directory to write ca.pem, ca-key.pem, ROLE.pem and ROLE-key.pem into")
	hosts := fs.String("hosts", "", "extra DNS names or IPs for every certificate (localhost and loopback are always included)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: devcerts [-out DIR] [-hosts H,...] [ROLE ...]\nroles default to %s\n", strings.Join(mtls.DevRoles, " "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	var hs []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hs = append(hs, h)
		}
	}
	roles := fs.Args()
	if err := mtls.WriteDevSet(*out, hs, roles...); err != nil {
		return err
	}
	if len(roles) == 0 {
		roles = mtls.DevRoles
	}
	for _, r := range roles {
		p := mtls.DevPaths(*out, r)
		fmt.Printf("%-15s %s  -tls-cert %s -tls-key %s -tls-ca %s\n", r, mtls.Identity(r), p.Cert, p.Key, p.CA)
	}
	return nil
}
