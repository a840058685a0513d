// Package pki makes the lab's certificate authority, the serving and client
// certificates of the control plane and nodes, the service-account signing
// key, and the kubeconfigs that use them. Keys are ECDSA P-256. Everything is
// written once into a directory and reused by later starts, so a lab that is
// brought up again keeps its identity (and its kubeconfig keeps working).
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Validity of every certificate. A lab lives for days, not years.
const validity = 365 * 24 * time.Hour

// CA is a certificate authority loaded into memory.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

// Dir is a directory of PEM files: NAME.crt and NAME.key.
type Dir string

func (d Dir) CertFile(name string) string { return filepath.Join(string(d), name+".crt") }
func (d Dir) KeyFile(name string) string  { return filepath.Join(string(d), name+".key") }

// EnsureCA loads the CA named "ca", creating it if it does not exist.
func (d Dir) EnsureCA() (*CA, error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return nil, err
	}
	if certPEM, key, err := d.load("ca"); err == nil {
		cert, err := parseCert(certPEM)
		if err != nil {
			return nil, err
		}
		return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "sluice-lab-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := d.store("ca", certPEM, key); err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// Request describes one leaf certificate.
type Request struct {
	Name   string   // file name stem
	CN     string   // common name: the user name for client certificates
	Orgs   []string // organisations: the groups for client certificates
	Server bool     // serving certificate (else client)
	DNS    []string
	IPs    []net.IP
}

// Ensure loads the certificate r.Name, issuing it from ca if it is missing.
func (d Dir) Ensure(ca *CA, r Request) error {
	if _, _, err := d.load(r.Name); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if r.Server {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: r.CN, Organization: r.Orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
		DNSNames:     r.DNS,
		IPAddresses:  r.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return fmt.Errorf("issue %s: %w", r.Name, err)
	}
	return d.store(r.Name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key)
}

// EnsureServiceAccountKey writes sa.key (private) and sa.pub (public), the
// pair the API server signs and verifies service-account tokens with.
func (d Dir) EnsureServiceAccountKey() error {
	pub := filepath.Join(string(d), "sa.pub")
	if _, err := os.Stat(pub); err == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := writeKey(d.KeyFile("sa"), key); err != nil {
		return err
	}
	return os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

// WriteKubeconfig writes a kubeconfig for the client certificate name that
// talks to server and trusts ca.
func (d Dir) WriteKubeconfig(path, server, user string, ca *CA, name string) error {
	cert, err := os.ReadFile(d.CertFile(name))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(d.KeyFile(name))
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sluice-lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca.PEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["sluice-lab"] = &clientcmdapi.Context{Cluster: "sluice-lab", AuthInfo: user}
	cfg.CurrentContext = "sluice-lab"
	return clientcmd.WriteToFile(*cfg, path)
}

func (d Dir) load(name string) ([]byte, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(d.CertFile(name))
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(d.KeyFile(name))
	if err != nil {
		return nil, nil, err
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, nil, fmt.Errorf("%s: no PEM block", d.KeyFile(name))
	}
	key, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", d.KeyFile(name), err)
	}
	return certPEM, key, nil
}

func (d Dir) store(name string, certPEM []byte, key *ecdsa.PrivateKey) error {
	if err := writeKey(d.KeyFile(name), key); err != nil {
		return err
	}
	return os.WriteFile(d.CertFile(name), certPEM, 0o644)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func parseCert(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
