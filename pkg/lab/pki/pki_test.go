package pki

import (
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

func TestIssueAndReuse(t *testing.T) {
	d := Dir(t.TempDir())
	ca, err := d.EnsureCA()
	if err != nil {
		t.Fatal(err)
	}
	r := Request{Name: "apiserver", CN: "kube-apiserver", Server: true, DNS: []string{"kubernetes"}, IPs: []net.IP{net.ParseIP("172.28.0.2")}}
	if err := d.Ensure(ca, r); err != nil {
		t.Fatal(err)
	}
	if err := d.Ensure(ca, Request{Name: "node-node1", CN: "system:node:node1", Orgs: []string{"system:nodes"}}); err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := d.load("apiserver")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := parseCert(certPEM)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "kubernetes"}); err != nil {
		t.Errorf("serving cert does not verify for kubernetes: %v", err)
	}
	if err := cert.VerifyHostname("172.28.0.2"); err != nil {
		t.Errorf("serving cert lacks its IP: %v", err)
	}
	// A second start reuses, never reissues.
	ca2, err := d.EnsureCA()
	if err != nil || !ca2.Cert.Equal(ca.Cert) {
		t.Errorf("CA reissued: %v", err)
	}
	d.Ensure(ca2, r)
	again, _, _ := d.load("apiserver")
	if string(again) != string(certPEM) {
		t.Error("certificate reissued on a second Ensure")
	}
	kc := filepath.Join(string(d), "kubelet.conf")
	if err := d.WriteKubeconfig(kc, "https://172.28.0.2:6443", "system:node:node1", ca, "node-node1"); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil || cfg.Host != "https://172.28.0.2:6443" || len(cfg.CertData) == 0 || len(cfg.CAData) == 0 {
		t.Errorf("kubeconfig: %+v %v", cfg, err)
	}
	if err := d.EnsureServiceAccountKey(); err != nil {
		t.Fatal(err)
	}
}
