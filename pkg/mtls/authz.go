package mtls

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// PeerIdentity is the mesh identity of the caller of an RPC, from its
// verified client certificate; "" over plaintext or without one.
func PeerIdentity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return ""
	}
	return IdentityOf(info.State.PeerCertificates[0])
}

// Authorizer decides, per method, which callers a server obeys: the
// service's RPCs only for Callers, admin methods only for Admins (or the
// bearer of AdminToken). Health checks are open to all; reflection to
// callers and admins.
type Authorizer struct {
	// Callers may call every non-admin method.
	Callers []string
	// Admins may call the admin methods (and reflection).
	Admins []string
	// AdminMethods are full method names ("/pkg.Service/Method").
	AdminMethods []string
	// AdminToken, when set, grants the admin methods to a caller sending
	// "authorization: Bearer TOKEN", with or without a certificate.
	AdminToken string
	// Open: a plaintext server, whose callers have no identity; the
	// service's RPCs are allowed to anyone, admin methods only by token.
	Open bool
}

const (
	healthPrefix     = "/grpc.health.v1.Health/"
	reflectionPrefix = "/grpc.reflection."
)

// Authorize returns nil when the caller of ctx may call method, or an
// Unauthenticated or PermissionDenied status saying what is needed.
func (a *Authorizer) Authorize(ctx context.Context, method string) error {
	if strings.HasPrefix(method, healthPrefix) {
		return nil
	}
	id := PeerIdentity(ctx)
	if slices.Contains(a.AdminMethods, method) {
		if id != "" && slices.Contains(a.Admins, id) || a.tokenOK(ctx) {
			return nil
		}
		switch {
		case a.Open && a.AdminToken == "":
			return status.Errorf(codes.PermissionDenied, "%s is an admin RPC: this plaintext worker has no admin credential configured (-admin-token-file), so it refuses it", method)
		case a.Open:
			return status.Errorf(codes.Unauthenticated, "%s is an admin RPC: send the admin token as \"authorization: Bearer TOKEN\"", method)
		case id == "":
			return status.Errorf(codes.Unauthenticated, "%s is an admin RPC: present an admin certificate", method)
		}
		return status.Errorf(codes.PermissionDenied, "%s is an admin RPC and %s is not an admin identity (admins: %s)", method, id, strings.Join(a.Admins, ", "))
	}
	if a.Open {
		return nil
	}
	if id == "" {
		return status.Errorf(codes.Unauthenticated, "%s needs a client certificate with a %s://%s/ identity", method, Scheme, TrustDomain)
	}
	if slices.Contains(a.Callers, id) || strings.HasPrefix(method, reflectionPrefix) && slices.Contains(a.Admins, id) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "identity %s may not call %s (allowed: %s)", id, method, strings.Join(a.Callers, ", "))
}

// tokenOK reports whether the request carries the admin token, compared in
// constant time.
func (a *Authorizer) tokenOK(ctx context.Context) bool { return BearerMatches(ctx, a.AdminToken) }

// BearerMatches reports whether the request carries "authorization: Bearer
// TOKEN" with token (never for an empty token), compared in constant time.
func BearerMatches(ctx context.Context, token string) bool {
	if token == "" {
		return false
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		scheme, tok, ok := strings.Cut(v, " ")
		if !ok || !strings.EqualFold(scheme, "bearer") {
			continue
		}
		got, want := sha256.Sum256([]byte(strings.TrimSpace(tok))), sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			return true
		}
	}
	return false
}
