package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"
)

func TestIssue(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tests := []struct {
		name  string
		spec  Spec
		usage x509.ExtKeyUsage
		host  string
	}{
		{"server", Spec{CommonName: "kube-apiserver", Server: true, IPs: []net.IP{net.IPv4(198, 18, 0, 2)}, DNSNames: []string{"kubernetes.default.svc"}}, x509.ExtKeyUsageServerAuth, "kubernetes.default.svc"},
		{"server by IP", Spec{CommonName: "kube-apiserver", Server: true, IPs: []net.IP{net.IPv4(198, 18, 0, 2)}}, x509.ExtKeyUsageServerAuth, "198.18.0.2"},
		{"client", Spec{CommonName: "system:node:n", Organization: []string{"system:nodes"}, Client: true}, x509.ExtKeyUsageClientAuth, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kp, err := ca.Issue(tt.spec, now)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM); err != nil {
				t.Fatalf("key pair does not match: %v", err)
			}
			block, _ := pem.Decode(kp.CertPEM)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: tt.host, KeyUsages: []x509.ExtKeyUsage{tt.usage}}); err != nil {
				t.Errorf("verify: %v", err)
			}
			if got := cert.Subject.Organization; len(tt.spec.Organization) > 0 && (len(got) != 1 || got[0] != tt.spec.Organization[0]) {
				t.Errorf("organization = %v, want %v", got, tt.spec.Organization)
			}
			wrong := x509.ExtKeyUsageClientAuth
			if tt.usage == wrong {
				wrong = x509.ExtKeyUsageServerAuth
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{wrong}}); err == nil {
				t.Errorf("certificate also valid for usage %v", wrong)
			}
		})
	}
}

func TestServiceAccountKey(t *testing.T) {
	pub, priv, err := ServiceAccountKey()
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := pem.Decode(pub)
	kb, _ := pem.Decode(priv)
	if pb == nil || pb.Type != "PUBLIC KEY" || kb == nil || kb.Type != "PRIVATE KEY" {
		t.Fatalf("unexpected PEM blocks %v %v", pb, kb)
	}
	if _, err := x509.ParsePKIXPublicKey(pb.Bytes); err != nil {
		t.Error(err)
	}
	if _, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err != nil {
		t.Error(err)
	}
}

// A CA read back from its files issues certificates that the original
// certificate verifies; a key of another CA is refused.
func TestLoadCA(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := loaded.Issue(Spec{CommonName: "registry", Server: true, IPs: []net.IP{net.IPv4(198, 18, 0, 2)}}, now)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(kp.CertPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "198.18.0.2"}); err != nil {
		t.Errorf("certificate from the loaded CA: %v", err)
	}

	other, err := NewCA("other-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := other.KeyPEM()
	for name, pair := range map[string][2][]byte{
		"key of another CA": {ca.CertPEM(), otherKey},
		"leaf as CA":        {kp.CertPEM, kp.KeyPEM},
		"garbage":           {[]byte("x"), keyPEM},
	} {
		if _, err := LoadCA(pair[0], pair[1]); err == nil {
			t.Errorf("%s: LoadCA succeeded", name)
		}
	}
}
