package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// DevRoles are the roles WriteDevSet writes when none are named.
var DevRoles = []string{RoleRouter, RoleEngine, RoleProviderProxy, RoleAdmin, RoleClient}

// DevPaths are the files of one role in a development set.
func DevPaths(dir, role string) Flags {
	return Flags{Cert: filepath.Join(dir, role+".pem"), Key: filepath.Join(dir, role+"-key.pem"), CA: filepath.Join(dir, "ca.pem")}
}

// WriteDevSet writes a development CA (ca.pem, ca-key.pem; an existing one
// in dir is reused) and one certificate per role (ROLE.pem, ROLE-key.pem)
// whose URI SAN is the role's identity. Every certificate also names
// localhost, 127.0.0.1 and ::1 and hosts, so clients that check host names
// (grpcurl, SDKs over HTTPS) accept it. Keys are ECDSA P-256, mode 0600.
func WriteDevSet(dir string, hosts []string, roles ...string) error {
	if len(roles) == 0 {
		roles = DevRoles
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ca, caKey, err := devCA(dir)
	if err != nil {
		return err
	}
	for _, role := range roles {
		if err := writeLeaf(dir, role, hosts, ca, caKey); err != nil {
			return fmt.Errorf("certificate for %s: %w", role, err)
		}
	}
	return nil
}

func devCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, nil, errors.New("existing ca-key.pem is not an ECDSA key")
		}
		c, err := x509.ParseCertificate(pair.Certificate[0])
		return c, key, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("existing CA in %s: %w", dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "llmrouter development CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func writeLeaf(dir, role string, hosts []string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	id, err := url.Parse(Identity(role))
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: role},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{id}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	p := DevPaths(dir, role)
	if err := writeKey(p.Key, key); err != nil {
		return err
	}
	return writePEM(p.Cert, "CERTIFICATE", der, 0o644)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

// writePEM replaces path atomically, so a process reloading it never reads
// half a file.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
