package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
)

// NATS_CREDS, NATS_NKEY and NATS_TLS_*: each against an embedded server that
// requires it. With the setting, connectNATS connects and the connection
// does request/reply and JetStream; without it, the server refuses the
// worker. Neither the seed, the JWT nor the private key reaches the logs.

// startSecureNATS starts an embedded server with JetStream from opts (auth
// and TLS already set), on a random loopback port, shut down by t.Cleanup.
func startSecureNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.JetStream = true
	return natstest.RunServer(t, opts)
}

// writeSecret writes a file only its owner may read, as a secret is mounted.
func writeSecret(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// connectWith loads the worker's configuration from env (plus the required
// iDenfy secrets) and connects as the worker does. Its connection is closed
// by t.Cleanup; logs collects what connectNATS logged.
func connectWith(t *testing.T, env map[string]string) (*nats.Conn, *syncBuffer, error) {
	t.Helper()
	cfg, err := loadConfig(lookupFrom(testEnv(env)))
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	logs := &syncBuffer{}
	nc, err := connectNATS(cfg, newLogger(logs, zerolog.DebugLevel, "json"), "idenfy-worker-test", nil)
	if nc != nil {
		t.Cleanup(nc.Close)
	}
	return nc, logs, err
}

// checkServes checks that a connection made by connectNATS gets connected
// and can do request/reply and JetStream.
func checkServes(t *testing.T, nc *nats.Conn, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("connectNATS: %v", err)
	}
	deadline := time.Now().Add(waitLimit)
	for !nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatalf("not connected; last error: %v", nc.LastError())
		}
		time.Sleep(10 * time.Millisecond)
	}

	sub, err := nc.Subscribe("security.echo", func(m *nats.Msg) { _ = m.Respond(append([]byte("echo: "), m.Data...)) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	reply, err := nc.Request("security.echo", []byte("ping"), waitLimit)
	if err != nil || string(reply.Data) != "echo: ping" {
		t.Fatalf("request/reply = %v, %v; want echo: ping", reply, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     "SECURITY",
		Subjects: []string{"security.jobs.>"},
		Storage:  jetstream.MemoryStorage,
	}); err != nil {
		t.Fatalf("JetStream: creating a stream: %v", err)
	}
	ack, err := js.Publish(ctx, "security.jobs.send", []byte("job"))
	if err != nil || ack.Sequence != 1 {
		t.Fatalf("JetStream: publish = %+v, %v; want sequence 1", ack, err)
	}
}

// checkRefused checks that the server refuses a connection made by
// connectNATS: it reports an error, at once or (connectNATS retries a
// failed first connect) as the connection's last error, and never
// connects.
func checkRefused(t *testing.T, nc *nats.Conn, err error, want func(error) bool) {
	t.Helper()
	if err == nil {
		deadline := time.Now().Add(waitLimit)
		for err = nc.LastError(); err == nil; err = nc.LastError() {
			if time.Now().After(deadline) {
				t.Fatal("no error: the server did not refuse the connection")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if nc.IsConnected() {
			t.Fatalf("connected despite %v", err)
		}
	}
	if !want(err) {
		t.Errorf("refused with %v, not the expected error", err)
	}
	t.Logf("refused: %v", err)
}

func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization violation")
}

func isTLSError(err error) bool {
	return strings.Contains(strings.ToLower(err.Error()), "tls")
}

// checkNoSecrets checks that logs hold none of secrets.
func checkNoSecrets(t *testing.T, logs *syncBuffer, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the logs hold a secret (%.12s...):\n%s", s, logs.String())
		}
	}
}

func TestNATSCreds(t *testing.T) {
	t.Parallel()
	// An operator, its system account, and an account with JetStream whose
	// user the worker is.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	operator, err := nkeys.CreateOperator()
	must(err)
	operatorPub, err := operator.PublicKey()
	must(err)
	newAccount := func(jetStream bool) (nkeys.KeyPair, string, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, err := kp.PublicKey()
		must(err)
		claims := jwt.NewAccountClaims(pub)
		if jetStream {
			claims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		token, err := claims.Encode(operator)
		must(err)
		return kp, pub, token
	}
	_, sysPub, sysJWT := newAccount(false)
	account, accountPub, accountJWT := newAccount(true)
	opClaims := jwt.NewOperatorClaims(operatorPub)
	opClaims.SystemAccount = sysPub
	opJWT, err := opClaims.Encode(operator)
	must(err)
	opDecoded, err := jwt.DecodeOperatorClaims(opJWT)
	must(err)
	resolver := &server.MemAccResolver{}
	must(resolver.Store(sysPub, sysJWT))
	must(resolver.Store(accountPub, accountJWT))

	user, err := nkeys.CreateUser()
	must(err)
	userPub, err := user.PublicKey()
	must(err)
	userSeed, err := user.Seed()
	must(err)
	userJWT, err := jwt.NewUserClaims(userPub).Encode(account)
	must(err)
	creds, err := jwt.FormatUserConfig(userJWT, userSeed)
	must(err)
	credsPath := writeSecret(t, "worker.creds", creds)

	ns := startSecureNATS(t, &server.Options{
		TrustedOperators: []*jwt.OperatorClaims{opDecoded},
		AccountResolver:  resolver,
		SystemAccount:    sysPub,
	})

	t.Run("with NATS_CREDS", func(t *testing.T) {
		nc, logs, err := connectWith(t, map[string]string{"NATS_URL": ns.ClientURL(), "NATS_CREDS": credsPath})
		checkServes(t, nc, err)
		checkNoSecrets(t, logs, string(userSeed), userJWT)
	})
	t.Run("without", func(t *testing.T) {
		nc, _, err := connectWith(t, map[string]string{"NATS_URL": ns.ClientURL()})
		checkRefused(t, nc, err, isAuthError)
	})
	t.Run("with another operator's creds", func(t *testing.T) {
		other, err := nkeys.CreateAccount()
		must(err)
		otherJWT, err := jwt.NewUserClaims(userPub).Encode(other)
		must(err)
		forged, err := jwt.FormatUserConfig(otherJWT, userSeed)
		must(err)
		nc, logs, err := connectWith(t, map[string]string{"NATS_URL": ns.ClientURL(), "NATS_CREDS": writeSecret(t, "forged.creds", forged)})
		checkRefused(t, nc, err, isAuthError)
		checkNoSecrets(t, logs, string(userSeed), otherJWT)
	})
}

func TestNATSNKey(t *testing.T) {
	t.Parallel()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	ns := startSecureNATS(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})

	t.Run("with NATS_NKEY", func(t *testing.T) {
		nc, logs, err := connectWith(t, map[string]string{"NATS_URL": ns.ClientURL(), "NATS_NKEY": writeSecret(t, "worker.nk", seed)})
		checkServes(t, nc, err)
		checkNoSecrets(t, logs, string(seed))
	})
	t.Run("without", func(t *testing.T) {
		nc, _, err := connectWith(t, map[string]string{"NATS_URL": ns.ClientURL()})
		checkRefused(t, nc, err, isAuthError)
	})
	t.Run("with another key", func(t *testing.T) {
		other, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		otherSeed, err := other.Seed()
		if err != nil {
			t.Fatal(err)
		}
		nc, logs, err := connectWith(t, map[string]string{"NATS_URL": ns.ClientURL(), "NATS_NKEY": writeSecret(t, "other.nk", otherSeed)})
		checkRefused(t, nc, err, isAuthError)
		checkNoSecrets(t, logs, string(otherSeed))
	})
}

// testPKI is a CA and certificates it issued, as PEM files.
type testPKI struct {
	ca                    *x509.Certificate
	caKey                 *ecdsa.PrivateKey
	caFile                string
	serverCert, serverKey string
	clientCert, clientKey string
	clientKeyPEM          string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{}
	var caPEM []byte
	p.ca, p.caKey, caPEM, _ = issue(t, nil, nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "idenfy-worker test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	})
	p.caFile = writeSecret(t, "ca.pem", caPEM)
	_, _, certPEM, keyPEM := issue(t, p.ca, p.caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "nats"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.serverCert, p.serverKey = writeSecret(t, "server.pem", certPEM), writeSecret(t, "server-key.pem", keyPEM)
	_, _, certPEM, keyPEM = issue(t, p.ca, p.caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "idenfy-worker"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.clientCert, p.clientKey = writeSecret(t, "client.pem", certPEM), writeSecret(t, "client-key.pem", keyPEM)
	p.clientKeyPEM = string(keyPEM)
	return p
}

// issue creates a key and a certificate from tmpl, signed by parent (self-
// signed when parent is nil), valid for an hour.
func issue(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Minute)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func TestNATSTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	// As a server is configured: tls { cert_file, key_file, ca_file,
	// verify: true }.
	tlsConfig, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: pki.serverCert,
		KeyFile:  pki.serverKey,
		CaFile:   pki.caFile,
		Verify:   true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns := startSecureNATS(t, &server.Options{TLS: true, TLSVerify: true, TLSConfig: tlsConfig, TLSTimeout: 5})
	url := ns.ClientURL()

	t.Run("with NATS_TLS_CA, NATS_TLS_CERT and NATS_TLS_KEY", func(t *testing.T) {
		nc, logs, err := connectWith(t, map[string]string{
			"NATS_URL": url, "NATS_TLS_CA": pki.caFile, "NATS_TLS_CERT": pki.clientCert, "NATS_TLS_KEY": pki.clientKey,
		})
		checkServes(t, nc, err)
		if !nc.TLSRequired() {
			t.Error("the connection is not TLS")
		}
		if state, err := nc.TLSConnectionState(); err != nil || len(state.PeerCertificates) == 0 || !state.PeerCertificates[0].Equal(mustServerCert(t, pki)) {
			t.Errorf("TLS peer = %v, %v; want the server's certificate", state.PeerCertificates, err)
		}
		checkNoSecrets(t, logs, pki.clientKeyPEM)
	})
	t.Run("without a client certificate", func(t *testing.T) {
		nc, _, err := connectWith(t, map[string]string{"NATS_URL": url, "NATS_TLS_CA": pki.caFile})
		checkRefused(t, nc, err, isTLSError)
	})
	t.Run("without TLS settings", func(t *testing.T) {
		nc, _, err := connectWith(t, map[string]string{"NATS_URL": url})
		checkRefused(t, nc, err, isTLSError)
	})
	t.Run("with a certificate from another CA", func(t *testing.T) {
		other := newTestPKI(t)
		nc, _, err := connectWith(t, map[string]string{
			"NATS_URL": url, "NATS_TLS_CA": pki.caFile, "NATS_TLS_CERT": other.clientCert, "NATS_TLS_KEY": other.clientKey,
		})
		checkRefused(t, nc, err, isTLSError)
	})
}

func mustServerCert(t *testing.T, p *testPKI) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(p.serverCert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
