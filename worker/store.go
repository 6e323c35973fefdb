package worker

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Record states of an idempotency key.
const (
	stateClaimed  = "claimed"  // a worker is calling iDenfy for it
	stateReleased = "released" // handed back (shutdown, retry later): free to claim
	stateDone     = "done"     // the outcome is final: republish it
)

// record is the value of an idempotency key in the KV bucket. It holds no
// phone number and no code: the fingerprint is a keyed hash, the result is
// the contract result, which holds neither.
type record struct {
	State string `json:"state"`
	Owner string `json:"owner,omitempty"`
	// LeaseUntil is when a claim lapses unless renewed (Unix milliseconds).
	LeaseUntil int64 `json:"lease_until,omitempty"`
	// Attempts made upstream so far, over every delivery.
	Attempts int `json:"attempts,omitempty"`
	// Ambiguous is set once any attempt may have been processed upstream
	// without its answer being read.
	Ambiguous bool `json:"ambiguous,omitempty"`
	// Counted is set once the send was counted against the number's limits,
	// so that a redelivery does not count it again.
	Counted bool `json:"counted,omitempty"`
	// Fingerprint tells whether a reused key carries the same request.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Result is the final contract result, set when State is done.
	Result json.RawMessage `json:"result,omitempty"`
}

// store keeps outcomes, claims and verify memory in the KV bucket, and send
// counters in the limits bucket.
type store struct {
	kv     *bucket
	limits *bucket // nil when send limits are off
	secret []byte  // keys every hash, so that stored hashes of numbers and codes cannot be reversed by enumeration
	owner  string
	lease  time.Duration
	clock  Clock
	hmacs  sync.Pool
}

// hash returns a keyed hash of value in the given domain, as 32 hex digits.
// A request takes several; the HMAC states are pooled.
func (s *store) hash(domain, value string) string {
	m, _ := s.hmacs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, s.secret)
	}
	m.Reset()
	var buf [sha256.Size]byte
	m.Write([]byte(domain))
	m.Write([]byte{0})
	m.Write([]byte(value))
	sum := m.Sum(buf[:0])
	s.hmacs.Put(m)
	return hex.EncodeToString(sum[:16])
}

// idempotencyKey is the KV key of an operation's idempotency key.
func (s *store) idempotencyKey(op operation, key string) string {
	return op.String() + "." + s.hash("key", key)
}

// claim is a held claim on an idempotency key. Its methods are safe to call
// from the lease renewer and the task at once.
type claim struct {
	mu  sync.Mutex
	key string
	rev uint64
	rec record
}

// acquisition is what acquire found for a key: a final outcome, a claim to
// go ahead with, or a live claim of another worker to wait for.
type acquisition struct {
	// done is set when the key has its final outcome; stored is that
	// outcome (a contract result) where the key keeps one.
	done   bool
	stored []byte
	// mismatch is set when the key's record was made for another request
	// (an idempotency key reused) or another code (verify memory).
	mismatch bool
	claim    *claim
	// busy is how long the current holder's lease has left.
	busy time.Duration
}

// acquire looks up key and claims it when it has no final outcome yet. A
// claim whose lease ran out is taken over and counts as an ambiguous
// attempt: its worker may have died in the middle of a call. mine reports
// whether this process is still working on the key itself.
//
// With strict, a record made for another fingerprint is refused before
// anything is written (an idempotency key reused for another request);
// without, it only matters once the record is done (verify memory: a
// request_id verified with another code).
func (s *store) acquire(ctx context.Context, key, fingerprint string, strict bool, mine func(string) bool) (acquisition, error) {
	// Most keys are new: claiming blind is one round trip, and only a
	// conflict reads what is there.
	c, err := s.write(ctx, key, 0, record{State: stateClaimed, Fingerprint: fingerprint})
	if !isConflict(err) {
		return acquisition{claim: c}, err
	}
	for range 10 {
		entry, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			// Expired, or deleted by hand: a delete marker is a revision of
			// its own, which the client's Create knows how to write over.
			c, err := s.createOverDeleted(ctx, key, record{State: stateClaimed, Fingerprint: fingerprint})
			if isConflict(err) {
				continue
			}
			return acquisition{claim: c}, err
		}
		if err != nil {
			return acquisition{}, fmt.Errorf("reading %s: %w", key, err)
		}
		var rec record
		if json.Unmarshal(entry.Value(), &rec) != nil {
			// Unreadable: nothing can be trusted about earlier attempts.
			rec = record{State: stateClaimed, Ambiguous: true}
		}
		mismatch := rec.Fingerprint != "" && rec.Fingerprint != fingerprint
		if mismatch && strict {
			return acquisition{mismatch: true}, nil
		}
		now := s.clock.Now()
		switch {
		case rec.State == stateDone:
			return acquisition{done: true, stored: rec.Result, mismatch: mismatch}, nil
		case rec.State == stateReleased:
		case rec.Owner == s.owner && mine(key):
			return acquisition{busy: s.lease / 3, mismatch: mismatch}, nil
		case rec.Owner != s.owner && now.Before(time.UnixMilli(rec.LeaseUntil)):
			return acquisition{busy: time.UnixMilli(rec.LeaseUntil).Sub(now), mismatch: mismatch}, nil
		default:
			// The holder's lease ran out, or this process lost track of its
			// own claim: take it over.
			rec.Ambiguous = true
			rec.Attempts++
		}
		rec.State = stateClaimed
		rec.Fingerprint = fingerprint
		c, err := s.write(ctx, key, entry.Revision(), rec)
		if isConflict(err) {
			continue
		}
		return acquisition{claim: c, mismatch: mismatch}, err
	}
	return acquisition{busy: time.Second}, nil
}

// write stores rec as a claim of this worker with a fresh lease, creating
// the key when rev is 0.
func (s *store) write(ctx context.Context, key string, rev uint64, rec record) (*claim, error) {
	rec.Owner = s.owner
	rec.LeaseUntil = s.clock.Now().Add(s.lease).UnixMilli()
	value, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	if rev, err = s.kv.put(ctx, key, value, rev); err != nil {
		return nil, err
	}
	return &claim{key: key, rev: rev, rec: rec}, nil
}

// createOverDeleted claims a key that has no value, even if a delete
// marker stands in its place.
func (s *store) createOverDeleted(ctx context.Context, key string, rec record) (*claim, error) {
	rec.Owner = s.owner
	rec.LeaseUntil = s.clock.Now().Add(s.lease).UnixMilli()
	value, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	rev, err := s.kv.Create(ctx, key, value)
	if err != nil {
		return nil, err
	}
	return &claim{key: key, rev: rev, rec: rec}, nil
}

// errClaimLost means another worker took the claim over.
var errClaimLost = errors.New("the claim was taken over by another worker")

// renew extends the lease of c.
func (s *store) renew(ctx context.Context, c *claim) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.rec
	rec.LeaseUntil = s.clock.Now().Add(s.lease).UnixMilli()
	return s.update(ctx, c, rec)
}

// finish records the final outcome of c.
func (s *store) finish(ctx context.Context, c *claim, a *attempts, counted bool, result []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := record{
		State:       stateDone,
		Attempts:    a.count,
		Ambiguous:   a.ambiguous,
		Counted:     counted,
		Fingerprint: c.rec.Fingerprint,
		Result:      result,
	}
	return s.update(ctx, c, rec)
}

// release hands c back, keeping what later holders must know.
func (s *store) release(ctx context.Context, c *claim, a *attempts, counted bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := record{
		State:       stateReleased,
		Attempts:    a.count,
		Ambiguous:   a.ambiguous,
		Counted:     counted,
		Fingerprint: c.rec.Fingerprint,
	}
	return s.update(ctx, c, rec)
}

func (s *store) update(ctx context.Context, c *claim, rec record) error {
	value, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	rev, err := s.kv.put(ctx, c.key, value, c.rev)
	if isConflict(err) {
		return errClaimLost
	}
	if err != nil {
		return err
	}
	c.rev, c.rec = rev, rec
	return nil
}

// verifyKey is the KV key of a request_id's verify memory. Its record is
// claimed while a worker asks iDenfy about the request_id, so that two
// verifies of one request_id never race upstream (the loser would hear a
// misleading false), and done once a code verified, with that code's keyed
// hash as fingerprint.
func (s *store) verifyKey(requestID string) string { return "verified." + s.hash("request", requestID) }

// codeHash proves a code without revealing it: a keyed hash, so that the
// 10,000 possible codes cannot be tried against it without the key.
func (s *store) codeHash(requestID, code string) string {
	return s.hash("code", requestID+"\x00"+code)
}
