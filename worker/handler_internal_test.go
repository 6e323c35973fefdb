package worker

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// After an attempt that may have reached iDenfy, an account error on a
// later attempt still says that the user may have been texted.
func TestAccountErrorAfterAmbiguousSendSaysSo(t *testing.T) {
	w := &Worker{log: zerolog.Nop(), soft: context.Background()}
	tk := &task{op: opSend, w: w}
	o := w.failedCall(context.Background(), tk, attempts{count: 2, ambiguous: true}, &idenfy.APIError{Status: 402})
	if e := o.send.Error; e == nil || e.Code != messages.CodeQuotaExhausted || !strings.Contains(e.Message, "may have been texted") {
		t.Errorf("failedCall after an ambiguous attempt = %+v, want quota_exhausted saying the user may have been texted", o.send.Error)
	}
}

// A request whose attempt may have reached iDenfy, cut short by a
// shutdown, is not told to ask again: a verify's answer cannot be trusted
// (outcome_unknown), a send keeps its cause with possible_duplicate. A job
// goes back to the stream, its next delivery inheriting the ambiguity.
func TestAmbiguousAttemptAtShutdown(t *testing.T) {
	soft, cancel := context.WithCancel(context.Background())
	cancel()
	w := &Worker{log: zerolog.Nop(), soft: soft}
	ambiguous := attempts{count: 1, ambiguous: true}
	verify := w.failedCall(soft, &task{op: opVerify, intake: intakeRequest, w: w, key: "id:k"}, ambiguous, &idenfy.APIError{Status: 502})
	if e := verify.verify.Error; e == nil || e.Code != messages.CodeOutcomeUnknown || e.Retryable || reopens(verify) {
		t.Errorf("verify at shutdown after an ambiguous attempt = %+v, want a final outcome_unknown", e)
	}
	send := w.failedCall(soft, &task{op: opSend, intake: intakeRequest, w: w, key: "id:k"}, ambiguous, &idenfy.APIError{Status: 502})
	if e := send.send.Error; e == nil || e.Code != messages.CodeUpstreamUnavailable || !send.send.PossibleDuplicate {
		t.Errorf("send at shutdown after an ambiguous attempt = %+v, want upstream_unavailable with possible_duplicate", send.send)
	}
	job := w.failedCall(soft, &task{op: opVerify, intake: intakeJob, w: w, key: "id:k", job: &jobDelivery{}}, ambiguous, &idenfy.APIError{Status: 502})
	if !job.handBack {
		t.Errorf("job at shutdown = %+v, want it handed back", job)
	}
}
