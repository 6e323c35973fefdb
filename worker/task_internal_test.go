package worker

import (
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// A job whose store is away goes back to the stream after a pause, not at
// once: at once, its every delivery would be spent in milliseconds.
func TestStoreErrorHandsAJobBackAfterAPause(t *testing.T) {
	job := &task{op: opSend, w: &Worker{log: zerolog.Nop()},
		job: &jobDelivery{retryBase: 5 * time.Second, delivered: 2}}
	o := storeError(job, attempts{}, "reading the idempotency key failed", errors.New("no responders"))
	if !o.handBack || o.delay != 10*time.Second {
		t.Errorf("storeError(job) = hand back %v after %v, want true after 10s", o.handBack, o.delay)
	}
	req := &task{op: opSend, w: &Worker{log: zerolog.Nop()}}
	o = storeError(req, attempts{}, "reading the idempotency key failed", errors.New("no responders"))
	if o.handBack || o.send.Error == nil || o.send.Error.Code != messages.CodeUpstreamUnavailable || !o.send.Error.Retryable {
		t.Errorf("storeError(request) = %+v, want a retryable upstream_unavailable answer", o.send)
	}
}

func TestReplyToRefusesSystemSubjects(t *testing.T) {
	for _, s := range []string{"$KV.idenfy_phone.send.x", "$JS.API.STREAM.DELETE.X", "$SYS.REQ.SERVER.PING", "a.*", "a.>", "a b", "", "a..b"} {
		if validSubject(s) {
			t.Errorf("validSubject(%q) = true, want false", s)
		}
	}
	for _, s := range []string{"signup.results.42", "_INBOX.abc.def"} {
		if !validSubject(s) {
			t.Errorf("validSubject(%q) = false, want true", s)
		}
	}
}
