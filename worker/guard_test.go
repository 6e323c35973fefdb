package worker_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/internal/natstest"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// The pumping guard holds across worker processes: sends nobody verifies
// to one range are refused once the range had N of them, through either
// worker, while a range whose codes are verified and another range go on.
func TestPumpingGuardAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	const n = 5
	ns := startNATS(t)
	sim := idenfytest.NewServer(t)
	env := []string{"CHILD_CONCURRENCY=8", "CHILD_SEND_LIMITS=off", fmt.Sprintf("CHILD_PUMPING_GUARD=%d/1h", n)}
	a := startChild(t, ns.ClientURL(), sim.URL, env...)
	b := startChild(t, ns.ClientURL(), sim.URL, env...)
	nc := natstest.Connect(t, ns.ClientURL())
	subj := messages.NewSubjects(messages.DefaultPrefix)

	total := 0 // sends answered sent, which reached iDenfy
	send := func(phone string) messages.SendResult {
		t.Helper()
		data, _ := json.Marshal(messages.SendRequest{PhoneNumber: phone})
		msg, err := nc.Request(subj.Send, data, 30*time.Second)
		if err != nil {
			t.Fatalf("send to %s: %v", messages.MaskPhone(phone), err)
		}
		var r messages.SendResult
		decodeInto(t, msg.Data, &r)
		if r.Status == messages.StatusSent {
			total++
		}
		return r
	}
	code := func(r messages.SendResult) messages.Code {
		if r.Error != nil {
			return r.Error.Code
		}
		return ""
	}

	// A range whose users type their codes: twice N sends, each verified.
	for i := range 2 * n {
		phone := fmt.Sprintf("+370600020%02d", i)
		r := send(phone)
		if r.Status != messages.StatusSent {
			t.Fatalf("send %d to a range with verified codes = %+v, want sent", i, r)
		}
		c, ok := sim.LastCode(phone)
		if !ok {
			t.Fatalf("no code delivered to send %d", i)
		}
		data, _ := json.Marshal(messages.VerifyRequest{RequestID: r.RequestID, ReceivedCode: c})
		msg, err := nc.Request(subj.Verify, data, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var v messages.VerifyResult
		decodeInto(t, msg.Data, &v)
		if v.Status != messages.StatusVerified {
			t.Fatalf("verify %d = %+v, want verified", i, v)
		}
	}

	// A pumped range: N sends go through, then the range is paused. The
	// workers' views follow the bucket within milliseconds, so a send or
	// two in flight may still pass; never fewer than N.
	sent, i := 0, 0
	for ; i < n+5; i++ {
		r := send(fmt.Sprintf("+370600010%02d", i))
		if code(r) == messages.CodeSuspectedFraud {
			break
		}
		if r.Status != messages.StatusSent {
			t.Fatalf("send %d to the pumped range = %+v", i, r)
		}
		sent++
	}
	if sent < n || sent > n+2 {
		t.Fatalf("the pumped range had %d sends before its first refusal, want %d (or one or two more in flight)", sent, n)
	}
	waitFor(t, "both workers to see the range paused", func() bool {
		for range 4 {
			if code(send("+37060001099")) != messages.CodeSuspectedFraud {
				return false
			}
		}
		return true
	})
	for j := range 10 {
		r := send(fmt.Sprintf("+370600010%02d", 50+j))
		if code(r) != messages.CodeSuspectedFraud || r.Error.Retryable {
			t.Errorf("send to the paused range = %+v, want suspected_fraud, not retryable", r)
		}
	}

	// Another range, and the verified one, are not affected.
	if r := send("+37060003001"); r.Status != messages.StatusSent {
		t.Errorf("send to another range = %+v, want sent", r)
	}
	if r := send("+37060002099"); r.Status != messages.StatusSent {
		t.Errorf("send to the range with verified codes = %+v, want sent", r)
	}
	for _, c := range []*child{a, b} {
		if microStats(t, nc, c.id) == 0 {
			t.Errorf("worker %s answered no send; the test did not exercise two processes", c.id)
		}
	}
	if got := sim.Stats().SendSMS; got != int64(total) {
		t.Errorf("iDenfy received %d sends, want %d: a refused send never reaches it", got, total)
	}
}
