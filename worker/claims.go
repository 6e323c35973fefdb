package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// The claims store is how the worker does each request once, whatever the
// redeliveries, duplicates and crashes (README, "Durable jobs"). Two kinds of
// key live in the outcome bucket:
//
//   - an idempotency key (a request's Nats-Msg-Id, or a job's stream
//     sequence): claimed while a worker works on the request, done with its
//     final result, or reopened for a later delivery to try again;
//   - a request_id's verify turn: claimed while a worker asks iDenfy about
//     the request_id, so that two verifies of it never race upstream (the
//     loser would hear a misleading false), and done once a code verified,
//     with that code's keyed hash as fingerprint: the verify memory.
//
// Both are taken through one loop (acquire): a lock inside the process
// first, since the store cannot tell two tasks of one process apart, then a
// compare-and-swap claim with a lease in the store, waiting while another
// worker's lease is live and taking over one that ran out.

// Key states in the store.
const (
	stateClaimed = "claimed"  // a worker is working on it
	stateOpen    = "released" // handed back (shutdown, retry later): free to claim
	stateDone    = "done"     // final: republish the result
)

// storeTimeout bounds one KV operation.
const storeTimeout = 5 * time.Second

// recordBudget bounds how long an outcome waits for the store to take it.
const recordBudget = 30 * time.Second

// keyRecord is the value of a key in the outcome bucket. It holds no phone
// number and no code: the fingerprint is a keyed hash, the result is the
// contract result, which holds neither.
type keyRecord struct {
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

// parseRecord reads a stored record. An unreadable one is a claim whose
// earlier attempts cannot be known: ambiguous.
func parseRecord(data []byte) keyRecord {
	var rec keyRecord
	if json.Unmarshal(data, &rec) != nil || rec.State == "" {
		return keyRecord{State: stateClaimed, Ambiguous: true}
	}
	return rec
}

// claims owns the outcome bucket: the records, the per-process key lock,
// and the leases of the claims this process holds with their keeper.
type claims struct {
	kv      *bucket
	hash    *hasher
	owner   string
	lease   time.Duration
	clock   Clock
	metrics *metrics
	// requestWait bounds how long a request waits for a key another task
	// holds (its retry budget): its caller would not hear the answer later.
	requestWait time.Duration

	mu    sync.Mutex
	local map[string]chan struct{} // keys a task of this process holds

	leaseMu sync.Mutex
	leases  map[*claim]*renewal
}

func newClaims(kv *bucket, h *hasher, owner string, lease, requestWait time.Duration, clock Clock, m *metrics) *claims {
	return &claims{
		kv: kv, hash: h, owner: owner, lease: lease, requestWait: requestWait, clock: clock, metrics: m,
		local:  make(map[string]chan struct{}),
		leases: make(map[*claim]*renewal),
	}
}

// claim is a held claim on a key. Its methods are safe to call from the
// lease keeper and the task at once.
type claim struct {
	mu  sync.Mutex
	key string
	rev uint64
	rec keyRecord
}

// requestKey is the store key of a task's idempotency key.
func (cl *claims) requestKey(t *task) string { return t.op.String() + "." + cl.hash.sum("key", t.key) }

// verifyTurnKey is the store key of a request_id's verify turn and memory.
func (cl *claims) verifyTurnKey(requestID string) string {
	return "verified." + cl.hash.sum("request", requestID)
}

// fingerprint identifies the request behind an idempotency key, so that a
// key reused for another request is refused instead of answered with the
// outcome of the first one.
func (cl *claims) fingerprint(t *task) string {
	if t.op == opVerify {
		return cl.hash.sum("fingerprint", "verify\x00"+t.verify.RequestID+"\x00"+t.verify.ReceivedCode)
	}
	return cl.hash.sum("fingerprint", "send\x00"+t.send.PhoneNumber+"\x00"+t.send.SenderName)
}

// codeHash proves a code without revealing it: keyed, so that the 10,000
// possible codes cannot be tried against it without the key.
func (cl *claims) codeHash(requestID, code string) string {
	return cl.hash.sum("code", requestID+"\x00"+code)
}

// claimRequest takes the task's idempotency key, or returns the outcome
// that ends the task instead: the stored one (a duplicate), a refusal (the
// key was used for another request), a hand-back or a store error. unlock
// gives the key back to the other tasks of this process.
func (cl *claims) claimRequest(soft, hard context.Context, t *task) (c *claim, unlock func(), o *outcome) {
	fp := cl.fingerprint(t)
	return cl.acquire(soft, hard, t, cl.requestKey(t), fp, "the idempotency key", func(rec *keyRecord) *outcome {
		if rec.Fingerprint != "" && rec.Fingerprint != fp {
			return failed(t, attempts{}, messages.NewError(messages.CodeInvalidRequest,
				"this Nats-Msg-Id was already used for a different request; use a new one per request"))
		}
		if rec.State != stateDone {
			return nil
		}
		o, err := decodeOutcome(t.op, rec.Result)
		if err != nil {
			return storeError(t, attempts{}, "a stored outcome is unreadable", err)
		}
		// The outcome is the first request's; the envelope is this one's.
		if id := t.correlationID(); id != "" {
			o.send.CorrelationID, o.verify.CorrelationID = id, id
		}
		cl.metrics.dedupHit(t.intake)
		return o
	})
}

// claimVerifyTurn takes the verify turn of the task's request_id, or
// answers from the verify memory: verified again with the code that
// verified (iDenfy would now answer a misleading false), rejected for any
// other (iDenfy would refuse every code now).
func (cl *claims) claimVerifyTurn(soft, hard context.Context, t *task, a attempts) (c *claim, unlock func(), o *outcome) {
	req := t.verify
	code := cl.codeHash(req.RequestID, req.ReceivedCode)
	c, unlock, o = cl.acquire(soft, hard, t, cl.verifyTurnKey(req.RequestID), code, "the verify memory", func(rec *keyRecord) *outcome {
		switch {
		case rec.State != stateDone:
			return nil
		case rec.Fingerprint == code:
			cl.metrics.memoryHit()
			return &outcome{op: opVerify, verify: verifiedResult(req, a.count)}
		}
		return &outcome{op: opVerify, verify: rejectedResult(req, a.count)}
	})
	if o != nil {
		o.a = a
	}
	return c, unlock, o
}

// acquire is the one loop that takes a key for a task: the process's lock
// on it, then the store's claim. judge reads what the store holds and either
// lets the task claim the key (nil) or ends the task with an outcome; it
// must end it for every done record. A key another worker holds is waited
// for (a job goes back to the stream instead).
func (cl *claims) acquire(soft, hard context.Context, t *task, key, fingerprint, what string, judge func(*keyRecord) *outcome) (*claim, func(), *outcome) {
	if t.job == nil && cl.requestWait > 0 {
		var cancel context.CancelFunc
		soft, cancel = context.WithTimeout(soft, cl.requestWait)
		defer cancel()
	}
	unlock, o := cl.lockLocal(soft, t, key)
	if o != nil {
		return nil, nil, o
	}
	for {
		ctx, done := context.WithTimeout(hard, storeTimeout)
		c, o, busy, err := cl.try(ctx, key, fingerprint, judge)
		done()
		switch {
		case err != nil:
			o = storeError(t, attempts{}, "reading "+what+" failed", err)
		case c != nil:
			return c, unlock, nil
		case o == nil:
			o = cl.waitBusy(soft, t, busy)
		}
		if o != nil {
			unlock()
			return nil, nil, o
		}
	}
}

// try makes one attempt at claiming key: a claim, an outcome from judge,
// or how long the current holder's lease has left.
func (cl *claims) try(ctx context.Context, key, fingerprint string, judge func(*keyRecord) *outcome) (*claim, *outcome, time.Duration, error) {
	// Most keys are new: claiming blind is one round trip, and only a
	// conflict reads what is there.
	c, err := cl.write(ctx, key, 0, keyRecord{State: stateClaimed, Fingerprint: fingerprint}, false)
	if !isConflict(err) {
		return c, nil, 0, err
	}
	for range 10 {
		entry, err := cl.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			// Expired, or deleted by hand: a delete marker is a revision of
			// its own, which the client's Create knows how to write over.
			c, err := cl.write(ctx, key, 0, keyRecord{State: stateClaimed, Fingerprint: fingerprint}, true)
			if isConflict(err) {
				continue
			}
			return c, nil, 0, err
		}
		if err != nil {
			return nil, nil, 0, fmt.Errorf("reading %s: %w", key, err)
		}
		rec := parseRecord(entry.Value())
		if o := judge(&rec); o != nil {
			return nil, o, 0, nil
		}
		if busy, live := cl.liveElsewhere(rec); live {
			return nil, nil, busy, nil
		}
		if rec.State == stateClaimed {
			// Its holder's lease ran out, or this process lost track of its
			// own claim (the local lock says no task of it works on the
			// key): take it over. The holder may have died mid-call.
			rec.Ambiguous = true
			rec.Attempts++
		}
		rec.State, rec.Fingerprint = stateClaimed, fingerprint
		c, err := cl.write(ctx, key, entry.Revision(), rec, false)
		if isConflict(err) {
			continue
		}
		return c, nil, 0, err
	}
	return nil, nil, time.Second, nil
}

// liveElsewhere reports whether rec is a claim of another worker whose
// lease still runs, and for how long.
func (cl *claims) liveElsewhere(rec keyRecord) (time.Duration, bool) {
	if rec.State != stateClaimed || rec.Owner == cl.owner {
		return 0, false
	}
	left := time.UnixMilli(rec.LeaseUntil).Sub(cl.clock.Now())
	return left, left > 0
}

// write stores rec as a claim of this worker with a fresh lease: over
// revision rev (0 creates the key), or over whatever delete marker stands
// in its place.
func (cl *claims) write(ctx context.Context, key string, rev uint64, rec keyRecord, overDeleted bool) (*claim, error) {
	rec.Owner = cl.owner
	rec.LeaseUntil = cl.clock.Now().Add(cl.lease).UnixMilli()
	value, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	if overDeleted {
		rev, err = cl.kv.Create(ctx, key, value)
	} else {
		rev, err = cl.kv.put(ctx, key, value, rev)
	}
	if err != nil {
		return nil, err
	}
	return &claim{key: key, rev: rev, rec: rec}, nil
}

// lockLocal waits until no other task of this process holds key, then
// holds it. A job whose key is held goes back to the stream instead (unless
// this is its last delivery).
func (cl *claims) lockLocal(soft context.Context, t *task, key string) (unlock func(), o *outcome) {
	for {
		cl.mu.Lock()
		busy, held := cl.local[key]
		if !held {
			ch := make(chan struct{})
			cl.local[key] = ch
			cl.mu.Unlock()
			return func() {
				cl.mu.Lock()
				delete(cl.local, key)
				cl.mu.Unlock()
				close(ch)
			}, nil
		}
		cl.mu.Unlock()
		if t.job != nil && !t.job.last {
			return nil, &outcome{op: t.op, handBack: true, delay: time.Second}
		}
		select {
		case <-busy:
		case <-soft.Done():
			return nil, waitEnded(soft, t)
		}
	}
}

// waitEnded is the outcome of a task whose wait for a key ended with ctx:
// the worker stopping, or a request's budget spent while another task held
// the key.
func waitEnded(ctx context.Context, t *task) *outcome {
	if t.job != nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return shuttingDown(t, attempts{})
	}
	return failed(t, attempts{}, messages.NewError(messages.CodeUpstreamUnavailable,
		"another request with this Nats-Msg-Id, or another verify of this request_id, is still under way; ask again"))
}

// waitBusy handles a key another worker holds. A job goes back to the
// stream, to return when the holder is likely done (unless this is its last
// delivery); a request waits a little and asks again. It returns the outcome
// when the task must end here.
func (cl *claims) waitBusy(soft context.Context, t *task, busy time.Duration) *outcome {
	if t.job != nil && !t.job.last {
		return &outcome{op: t.op, handBack: true, delay: busy + 100*time.Millisecond}
	}
	// Polling is a network matter, paced by the wall clock; whether the
	// holder's lease ran out is judged on the worker's clock. A job on its
	// last delivery that waits here keeps its delivery alive.
	if t.job != nil {
		_ = t.job.msg.InProgress()
	}
	select {
	case <-time.After(min(busy, time.Second)):
		return nil
	case <-soft.Done():
		return waitEnded(soft, t)
	}
}

// record stores a task's outcome under its claim: final, or reopened so
// that the same key asked again is tried again. The outcome must be stored
// before the job is acked or the request answered, or a duplicate would call
// iDenfy again: a store that is briefly away (a NATS restart) is waited
// for, with the claim's lease still renewed: by a request up to
// recordBudget, by a job until the worker's shutdown timeout cuts it.
func (cl *claims) record(ctx context.Context, t *task, c *claim, o *outcome) {
	final := !reopens(o)
	var result []byte
	if final {
		result = o.encode()
	}
	// A job keeps trying while the worker runs (ctx): acked with its
	// outcome unrecorded, a duplicate of its key would call iDenfy again. A
	// request's caller would not wait longer than recordBudget.
	budget := recordBudget
	if t.job != nil {
		budget = 0
	}
	b := backoff.WithContext(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(budget),
	), ctx)
	err := backoff.Retry(func() error {
		sctx, done := context.WithTimeout(context.Background(), storeTimeout)
		defer done()
		err := cl.settle(sctx, c, o.a, o.counted, final, result)
		if errors.Is(err, errClaimLost) {
			return backoff.Permanent(err)
		}
		return err
	}, b)
	if err != nil {
		t.logger().Error().Err(err).Bool("hand_back", o.handBack).
			Msg("recording the outcome in the idempotency store failed; a duplicate of this request would call iDenfy again")
	}
}

// reopens reports whether an outcome leaves its key open for another try
// rather than final: a job handed back, or a failure that asking again may
// mend. Unless an attempt may have reached iDenfy: then the outcome is
// final, since trying again could text the user again.
func reopens(o *outcome) bool {
	if o.handBack {
		return true
	}
	e := o.err()
	return e != nil && e.Retryable && !o.a.ambiguous
}

// rememberVerify ends a verify turn: done with the code's hash when the
// code verified (the verify memory), reopened otherwise, keeping whether an
// attempt may have been accepted upstream for the verifies after it.
func (cl *claims) rememberVerify(t *task, c *claim, o *outcome) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	err := cl.settle(ctx, c, attempts{ambiguous: o.a.ambiguous}, false, o.verify.Status == messages.StatusVerified, nil)
	if err != nil {
		t.logger().Warn().Err(err).Msg("recording the verify memory failed")
	}
}

// errClaimLost means another worker took the claim over.
var errClaimLost = errors.New("the claim was taken over by another worker")

// settle writes the end of c: done with result when final, else open,
// keeping what later holders must know.
func (cl *claims) settle(ctx context.Context, c *claim, a attempts, counted, final bool, result []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := keyRecord{
		State:       stateOpen,
		Attempts:    a.count,
		Ambiguous:   a.ambiguous,
		Counted:     counted,
		Fingerprint: c.rec.Fingerprint,
	}
	if final {
		rec.State, rec.Result = stateDone, result
	}
	return cl.update(ctx, c, rec)
}

// renew extends the lease of c.
func (cl *claims) renew(ctx context.Context, c *claim) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.rec
	rec.LeaseUntil = cl.clock.Now().Add(cl.lease).UnixMilli()
	return cl.update(ctx, c, rec)
}

func (cl *claims) update(ctx context.Context, c *claim, rec keyRecord) error {
	value, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	rev, err := cl.kv.put(ctx, c.key, value, c.rev)
	if isConflict(err) {
		return errClaimLost
	}
	if err != nil {
		return err
	}
	c.rev, c.rec = rev, rec
	return nil
}

// keyState is what the store knows of a key, for a job that used up its
// deliveries (stranded.go): whether it is done (and with which result),
// claimed by a worker, or open; and what earlier attempts left behind.
type keyState struct {
	State     string // stateDone, stateClaimed, stateOpen, or "" for a key never claimed (or expired)
	Result    []byte // the final result when done
	Attempts  int
	Ambiguous bool
}

// state reads what the store knows of a task's idempotency key.
func (cl *claims) state(ctx context.Context, t *task) (keyState, error) {
	entry, err := cl.kv.Get(ctx, cl.requestKey(t))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return keyState{}, nil
	}
	if err != nil {
		return keyState{}, err
	}
	rec := parseRecord(entry.Value())
	return keyState{State: rec.State, Result: rec.Result, Attempts: rec.Attempts, Ambiguous: rec.Ambiguous}, nil
}

// renewal is a claim under renewal.
type renewal struct {
	// log builds the task's logger when a renewal has something to say:
	// most claims never do, and building it costs a keyed hash.
	log     func() *zerolog.Logger
	job     *jobDelivery
	every   time.Duration
	renewed time.Time // wall clock
}

// keep has the lease keeper renew a claim's lease, and tell JetStream that
// job (when not nil) is still being worked on, until stopped. Most calls end
// long before the first renewal is due, so registering is all they cost: no
// goroutine or timer per request.
func (cl *claims) keep(c *claim, log func() *zerolog.Logger, job *jobDelivery) (stop func()) {
	r := &renewal{log: log, job: job, every: cl.lease / 3, renewed: time.Now()}
	if job != nil {
		r.every = min(r.every, job.ackWait/3)
	}
	cl.leaseMu.Lock()
	cl.leases[c] = r
	cl.leaseMu.Unlock()
	return func() {
		cl.leaseMu.Lock()
		delete(cl.leases, c)
		cl.leaseMu.Unlock()
	}
}

// keepLeases renews the claims that are due, until done ends. The interval
// is wall time: it keeps network state alive, whatever the worker's clock
// says.
func (cl *claims) keepLeases(done <-chan struct{}) {
	tick := min(time.Second, cl.lease/6)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		select {
		case <-done:
			return
		case <-ticker.C:
		}
		var wg sync.WaitGroup
		for c, r := range cl.due(time.Now(), tick/2) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl.renewOne(c, r)
			}()
		}
		wg.Wait()
	}
}

// due returns the claims whose renewal is due within slack of now, marked
// as renewed.
func (cl *claims) due(now time.Time, slack time.Duration) map[*claim]*renewal {
	cl.leaseMu.Lock()
	defer cl.leaseMu.Unlock()
	var due map[*claim]*renewal
	for c, r := range cl.leases {
		if now.Sub(r.renewed) >= r.every-slack {
			r.renewed = now
			if due == nil {
				due = make(map[*claim]*renewal)
			}
			due[c] = r
		}
	}
	return due
}

func (cl *claims) renewOne(c *claim, r *renewal) {
	if r.job != nil {
		if err := r.job.msg.InProgress(); err != nil {
			r.log().Debug().Err(err).Msg("in-progress ack failed")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := cl.renew(ctx, c); err != nil {
		r.log().Warn().Err(err).Msg("renewing a claim failed")
	}
}
