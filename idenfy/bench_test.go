package idenfy_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
)

// inMemory answers like iDenfy without a network, so that the benchmark
// measures the client alone: encoding, the request, reading and checking
// the answer.
type inMemory struct{}

func (inMemory) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	return &http.Response{
		StatusCode: http.StatusOK,
		Body:       io.NopCloser(strings.NewReader(`{"request_id":"3d50e1584e0946e789e0185c009aaadf"}`)),
		Request:    r,
	}, nil
}

func BenchmarkSendSMS(b *testing.B) {
	c, err := idenfy.NewClient(idenfy.Config{APIKey: "k", APISecret: "s"}, idenfy.WithHTTPClient(&http.Client{Transport: inMemory{}}))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	req := idenfy.SendSMSRequest{PhoneNumber: "+12025550163"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.SendSMS(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
