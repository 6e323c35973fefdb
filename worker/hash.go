package worker

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"sync"
)

// hasher keys every hash the worker keeps in JetStream (idempotency keys,
// phone numbers, request_ids, codes), so that they cannot be reversed by
// trying every value without the key. Every worker of a deployment needs the
// same key.
type hasher struct {
	secret []byte
	// A request takes several hashes; the HMAC states are pooled.
	pool sync.Pool
}

func newHasher(secret []byte) *hasher { return &hasher{secret: secret} }

// sum returns a keyed hash of value in domain, as 32 hex digits. Domains keep
// a hash of one kind of value from matching a hash of another.
func (h *hasher) sum(domain, value string) string {
	m, _ := h.pool.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, h.secret)
	}
	m.Reset()
	var buf [sha256.Size]byte
	m.Write([]byte(domain))
	m.Write([]byte{0})
	m.Write([]byte(value))
	sum := m.Sum(buf[:0])
	h.pool.Put(m)
	return hex.EncodeToString(sum[:16])
}
