package worker

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/internal/clocktest"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// TestStrandedOutcome: a job that used up its deliveries is answered from
// what the claims store knows of its key, and never told "unavailable" when
// an attempt may have been accepted upstream.
func TestStrandedOutcome(t *testing.T) {
	const rid = "3d50e1584e0946e789e0185c009aaadf"
	sendJob := []byte(`{"phone_number":"+12025550163"}`)
	verifyJob := []byte(`{"request_id":"` + rid + `","received_code":"1234"}`)
	tests := []struct {
		name       string
		op         operation
		before     *keyRecord
		wantStatus messages.Status
		wantCode   messages.Code
		wantDup    bool
	}{
		{name: "send done", op: opSend, before: &keyRecord{State: stateDone, Result: []byte(`{"status":"sent","request_id":"` + rid + `","attempts":1}`)},
			wantStatus: messages.StatusSent},
		{name: "send claimed when its worker vanished", op: opSend, before: &keyRecord{State: stateClaimed, Owner: "w2"},
			wantStatus: messages.StatusFailed, wantCode: messages.CodeOutcomeUnknown, wantDup: true},
		{name: "verify reopened after an ambiguous attempt", op: opVerify, before: &keyRecord{State: stateOpen, Ambiguous: true, Attempts: 2},
			wantStatus: messages.StatusFailed, wantCode: messages.CodeOutcomeUnknown},
		{name: "send reopened after an ambiguous attempt", op: opSend, before: &keyRecord{State: stateOpen, Ambiguous: true, Attempts: 2},
			wantStatus: messages.StatusFailed, wantCode: messages.CodeOutcomeUnknown, wantDup: true},
		{name: "verify reopened cleanly", op: opVerify, before: &keyRecord{State: stateOpen, Attempts: 3},
			wantStatus: messages.StatusFailed, wantCode: messages.CodeUpstreamUnavailable},
		{name: "send never claimed", op: opSend,
			wantStatus: messages.StatusFailed, wantCode: messages.CodeUpstreamUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl, kv := testClaims(t, "w1", clocktest.New(time.Now()))
			w := &Worker{log: zerolog.Nop(), hash: cl.hash, claims: cl}
			tk := &task{op: tt.op, intake: intakeJob, key: "id:stranded", w: w}
			if tt.before != nil {
				put(t, kv, cl.requestKey(tk), *tt.before)
			}
			data := sendJob
			if tt.op == opVerify {
				data = verifyJob
			}
			o := w.strandedOutcome(context.Background(), tk, data, 20)
			if o.status() != tt.wantStatus || errCode(o) != tt.wantCode {
				t.Fatalf("strandedOutcome = %q %q, want %q %q", o.status(), errCode(o), tt.wantStatus, tt.wantCode)
			}
			if tt.op == opSend && o.send.PossibleDuplicate != tt.wantDup {
				t.Errorf("strandedOutcome possible_duplicate = %v, want %v", o.send.PossibleDuplicate, tt.wantDup)
			}
		})
	}
}
