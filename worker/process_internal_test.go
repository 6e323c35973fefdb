package worker

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

// panickingTransport stands for a bug anywhere below the handler core.
type panickingTransport struct{}

func (panickingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	panic("a bug in the HTTP stack")
}

// TestPanicAnswersTheRequest: a panic while handling one request answers
// that request (outcome_unknown: nothing is known of where it stopped) and
// the worker goes on serving.
func TestPanicAnswersTheRequest(t *testing.T) {
	client, err := idenfy.NewClient(idenfy.Config{BaseURL: "http://127.0.0.1:1", APIKey: "k", APISecret: "s"},
		idenfy.WithHTTPClient(&http.Client{Transport: panickingTransport{}}))
	if err != nil {
		t.Fatal(err)
	}
	w, nc, _ := startedWorker(t, Config{Client: client})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for i, phone := range []string{"+12025550163", "+12025550164"} {
		data, _ := json.Marshal(messages.SendRequest{PhoneNumber: phone})
		m, err := nc.RequestWithContext(ctx, w.subj.Send, data)
		if err != nil {
			t.Fatalf("request %d after a panic: %v", i, err)
		}
		var r messages.SendResult
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		if r.Status != messages.StatusFailed || r.Error == nil || r.Error.Code != messages.CodeOutcomeUnknown || !r.PossibleDuplicate {
			t.Errorf("request %d = %+v, want failed outcome_unknown with possible_duplicate", i, r)
		}
	}
}
