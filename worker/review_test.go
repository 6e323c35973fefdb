package worker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
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

func TestResultTTLOfLessThanAMinuteIsRefused(t *testing.T) {
	client, err := idenfy.NewClient(idenfy.Config{APIKey: "k", APISecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Conn: &nats.Conn{}, Client: client, HashKey: []byte("k"), ResultTTL: 5 * time.Second})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "ResultTTL" {
		t.Errorf("New with a 5s result TTL = %v, want an error about the result TTL", err)
	}
}
