package domain

import (
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Keys made fresh by the tests, in the forms users paste them.

func authorizedLine(t testing.TB, pub any, comment string) (string, ssh.PublicKey) {
	t.Helper()
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatalf("ssh public key: %v", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	if comment != "" {
		line += " " + comment
	}
	return line, sshPub
}

func newEd25519(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("ed25519 key: %v", err)
	}
	return pub, priv
}

func ed25519Line(t testing.TB, comment string) (string, ssh.PublicKey) {
	t.Helper()
	pub, _ := newEd25519(t)
	return authorizedLine(t, pub, comment)
}

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatalf("rsa %d key: %v", bits, err)
	}
	return key
}

func ecdsaLine(t testing.TB, curve elliptic.Curve, comment string) (string, ssh.PublicKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatalf("ecdsa key: %v", err)
	}
	return authorizedLine(t, &key.PublicKey, comment)
}

// opensshPrivateKey is a private key as `ssh-keygen` writes it.
func opensshPrivateKey(t testing.TB) string {
	t.Helper()
	_, priv := newEd25519(t)
	block, err := ssh.MarshalPrivateKey(priv, "me@laptop")
	if err != nil {
		t.Fatalf("marshal private key: %v", err)
	}
	return string(pem.EncodeToMemory(block))
}

// pkcs1PrivateKey is an old-style "BEGIN RSA PRIVATE KEY" block.
func pkcs1PrivateKey(t testing.TB) string {
	t.Helper()
	key := rsaKey(t, 2048)
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
}

func pkcs8PrivateKey(t testing.TB) string {
	t.Helper()
	_, priv := newEd25519(t)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatalf("pkcs8: %v", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// certificateLine is a user certificate signed by a throwaway CA.
func certificateLine(t testing.TB) string {
	t.Helper()
	_, caPriv := newEd25519(t)
	ca, err := ssh.NewSignerFromKey(caPriv)
	if err != nil {
		t.Fatalf("ca signer: %v", err)
	}
	userPub, _ := newEd25519(t)
	_, sshPub := authorizedLine(t, userPub, "")
	cert := &ssh.Certificate{
		Key:             sshPub,
		Serial:          1,
		CertType:        ssh.UserCert,
		KeyId:           "me",
		ValidPrincipals: []string{"me"},
		ValidBefore:     ssh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatalf("sign certificate: %v", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert))) + " me@laptop"
}

// dsaLine is an ssh-dss key in authorized_keys form. The ssh package no
// longer builds DSA keys, so the wire form is assembled here (RFC 4253 6.6).
func dsaLine(t testing.TB) string {
	t.Helper()
	var key dsa.PrivateKey
	if err := dsa.GenerateParameters(&key.Parameters, rand.Reader, dsa.L1024N160); err != nil {
		t.Fatalf("dsa parameters: %v", err)
	}
	if err := dsa.GenerateKey(&key, rand.Reader); err != nil {
		t.Fatalf("dsa key: %v", err)
	}
	blob := ssh.Marshal(struct {
		Name       string
		P, Q, G, Y *big.Int
	}{ssh.InsecureKeyAlgoDSA, key.P, key.Q, key.G, key.Y})
	return "ssh-dss " + base64Std(blob) + " old@laptop"
}
