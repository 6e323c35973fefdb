package worker

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/internal/clocktest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// testClaims returns a claims store of owner on a fresh bucket of an
// embedded server, and the bucket.
func testClaims(t *testing.T, owner string, clock Clock) (*claims, jetstream.KeyValue) {
	t.Helper()
	ns := natstest.RunServer(t, nil)
	nc := natstest.Connect(t, ns.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "claims_test", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	return newClaims(newBucket(nc, kv), newHasher([]byte("k")), owner, 30*time.Second, 20*time.Second, clock, newMetrics(nil, nil)), kv
}

// put stores rec under key as if another worker had.
func put(t *testing.T, kv jetstream.KeyValue, key string, rec any) {
	t.Helper()
	var data []byte
	switch v := rec.(type) {
	case []byte:
		data = v
	default:
		var err error
		if data, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
}

// TestClaimRequestBranches walks every way acquire can find an
// idempotency key: what the task is told, and what the claim carries on.
func TestClaimRequestBranches(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	now := clock.Now()
	sent := []byte(`{"status":"sent","request_id":"3d50e1584e0946e789e0185c009aaadf","attempts":1}`)
	tests := []struct {
		name   string
		before any // the record another worker left, nil for none
		// want: either a claim carrying attempts and ambiguity, or an
		// outcome with this status and code.
		wantClaim     bool
		wantAttempts  int
		wantAmbiguous bool
		wantStatus    messages.Status
		wantCode      messages.Code
		wantHandBack  bool
	}{
		{name: "new key", wantClaim: true},
		{name: "done", before: keyRecord{State: stateDone, Fingerprint: "FP", Result: sent},
			wantStatus: messages.StatusSent},
		{name: "used for another request", before: keyRecord{State: stateDone, Fingerprint: "other", Result: sent},
			wantStatus: messages.StatusFailed, wantCode: messages.CodeInvalidRequest},
		{name: "claimed for another request", before: keyRecord{State: stateClaimed, Owner: "w2", Fingerprint: "other",
			LeaseUntil: now.Add(time.Minute).UnixMilli()},
			wantStatus: messages.StatusFailed, wantCode: messages.CodeInvalidRequest},
		{name: "reopened after an ambiguous attempt", before: keyRecord{State: stateOpen, Fingerprint: "FP", Attempts: 2, Ambiguous: true},
			wantClaim: true, wantAttempts: 2, wantAmbiguous: true},
		{name: "reopened cleanly", before: keyRecord{State: stateOpen, Fingerprint: "FP", Attempts: 1},
			wantClaim: true, wantAttempts: 1},
		{name: "live claim of another worker: a job goes back", before: keyRecord{State: stateClaimed, Owner: "w2", Fingerprint: "FP",
			LeaseUntil: now.Add(time.Minute).UnixMilli()},
			wantHandBack: true},
		{name: "lapsed claim of another worker is taken over", before: keyRecord{State: stateClaimed, Owner: "w2", Fingerprint: "FP",
			Attempts: 1, LeaseUntil: now.Add(-time.Second).UnixMilli()},
			wantClaim: true, wantAttempts: 2, wantAmbiguous: true},
		{name: "a claim of this process no task holds is taken over", before: keyRecord{State: stateClaimed, Owner: "w1", Fingerprint: "FP",
			LeaseUntil: now.Add(time.Minute).UnixMilli()},
			wantClaim: true, wantAttempts: 1, wantAmbiguous: true},
		{name: "unreadable record", before: []byte("{not json"),
			wantClaim: true, wantAttempts: 1, wantAmbiguous: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl, kv := testClaims(t, "w1", clock)
			w := &Worker{log: zerolog.Nop(), hash: cl.hash}
			tk := &task{op: opSend, intake: intakeJob, key: "id:k", w: w,
				send: messages.SendRequest{PhoneNumber: "+12025550163"},
				job:  &jobDelivery{retryBase: time.Second, delivered: 1}}
			fp := cl.fingerprint(tk)
			if tt.before != nil {
				if rec, ok := tt.before.(keyRecord); ok && rec.Fingerprint == "FP" {
					rec.Fingerprint = fp
					tt.before = rec
				}
				put(t, kv, cl.requestKey(tk), tt.before)
			}
			ctx := context.Background()
			c, unlock, o := cl.claimRequest(ctx, ctx, tk)
			if tt.wantClaim {
				if c == nil {
					t.Fatalf("claimRequest = outcome %+v, want a claim", o)
				}
				unlock()
				if c.rec.Attempts != tt.wantAttempts || c.rec.Ambiguous != tt.wantAmbiguous || c.rec.Owner != "w1" || c.rec.State != stateClaimed {
					t.Errorf("claim = %+v, want claimed by w1 with attempts %d, ambiguous %v", c.rec, tt.wantAttempts, tt.wantAmbiguous)
				}
				return
			}
			if c != nil {
				t.Fatalf("claimRequest = claim %+v, want an outcome", c.rec)
			}
			if tt.wantHandBack {
				if !o.handBack || o.delay <= 0 {
					t.Errorf("claimRequest = %+v, want the job handed back after a delay", o)
				}
				return
			}
			if o.send.Status != tt.wantStatus {
				t.Errorf("claimRequest status = %q, want %q", o.send.Status, tt.wantStatus)
			}
			if got := errCode(o); got != tt.wantCode {
				t.Errorf("claimRequest code = %q, want %q", got, tt.wantCode)
			}
		})
	}
}

func errCode(o *outcome) messages.Code {
	if e := o.err(); e != nil {
		return e.Code
	}
	return ""
}

// TestClaimVerifyTurn: the verify memory answers from a done turn, and a
// turn left open by an attempt that may have been accepted stays ambiguous.
func TestClaimVerifyTurn(t *testing.T) {
	clock := clocktest.New(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	const rid = "3d50e1584e0946e789e0185c009aaadf"
	cl, kv := testClaims(t, "w1", clock)
	w := &Worker{log: zerolog.Nop(), hash: cl.hash}
	verify := func(code string) *task {
		return &task{op: opVerify, intake: intakeRequest, w: w,
			verify: messages.VerifyRequest{RequestID: rid, ReceivedCode: code}}
	}
	ctx := context.Background()
	key := cl.verifyTurnKey(rid)

	put(t, kv, key, keyRecord{State: stateOpen, Ambiguous: true})
	c, unlock, o := cl.claimVerifyTurn(ctx, ctx, verify("1234"), attempts{})
	if c == nil || !c.rec.Ambiguous {
		t.Fatalf("claimVerifyTurn after an ambiguous attempt = %+v / %+v, want an ambiguous claim", c, o)
	}
	unlock()

	put(t, kv, key, keyRecord{State: stateDone, Fingerprint: cl.codeHash(rid, "1234")})
	for _, tt := range []struct {
		code string
		want messages.Status
	}{{"1234", messages.StatusVerified}, {"9999", messages.StatusRejected}} {
		c, _, o := cl.claimVerifyTurn(ctx, ctx, verify(tt.code), attempts{})
		if c != nil || o == nil || o.verify.Status != tt.want {
			t.Errorf("claimVerifyTurn(%s) after a success = %+v, want %q from memory", tt.code, o, tt.want)
		}
	}
}

// TestLockLocal: a second task of one process on a held key waits (a
// request) or goes back to the stream (a job), and gets it once released.
func TestLockLocal(t *testing.T) {
	cl := newClaims(nil, newHasher([]byte("k")), "w1", time.Second, time.Second, systemClock{}, newMetrics(nil, nil))
	w := &Worker{log: zerolog.Nop()}
	req := &task{op: opSend, w: w}
	job := &task{op: opSend, w: w, job: &jobDelivery{}}
	unlock, o := cl.lockLocal(context.Background(), req, "k")
	if o != nil {
		t.Fatalf("lockLocal of a free key = %+v", o)
	}
	if _, o := cl.lockLocal(context.Background(), job, "k"); o == nil || !o.handBack {
		t.Errorf("lockLocal by a job of a held key = %+v, want hand back", o)
	}
	got := make(chan func(), 1)
	go func() {
		u, _ := cl.lockLocal(context.Background(), req, "k")
		got <- u
	}()
	unlock()
	if u := <-got; u == nil {
		t.Error("a request waiting for a held key did not get it once released")
	} else {
		u()
	}
}

// TestRequestWaitIsBounded: a request waits for a key another task of the
// process holds no longer than its budget, and is told to ask again; a
// job goes back to the stream.
func TestRequestWaitIsBounded(t *testing.T) {
	cl := newClaims(nil, newHasher([]byte("k")), "w1", time.Second, 50*time.Millisecond, systemClock{}, newMetrics(nil, nil))
	w := &Worker{log: zerolog.Nop(), hash: cl.hash}
	holder := &task{op: opSend, w: w}
	unlock, o := cl.lockLocal(context.Background(), holder, "k")
	if o != nil {
		t.Fatalf("lockLocal of a free key = %+v", o)
	}
	defer unlock()
	req := &task{op: opSend, intake: intakeRequest, w: w, key: "id:k"}
	_, _, o = cl.acquire(context.Background(), context.Background(), req, "k", "fp", "the idempotency key", func(*keyRecord) *outcome { return nil })
	if e := o.err(); e == nil || e.Code != messages.CodeUpstreamUnavailable || !e.Retryable || o.handBack {
		t.Errorf("a request waiting past its budget = %+v, want a retryable upstream_unavailable", o)
	}
}
