package messages_test

import (
	"encoding/json"
	"testing"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// The hot path of every request: decode and validate what the caller sent,
// encode what the worker answers. Compare across changes with benchstat.

var (
	sendPayload   = []byte(`{"phone_number":"+12025550163","sender_name":"Acme","correlation_id":"signup-42"}`)
	verifyPayload = []byte(`{"request_id":"3d50e1584e0946e789e0185c009aaadf","received_code":"1234","correlation_id":"signup-42"}`)
)

func BenchmarkDecodeSendRequest(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := messages.DecodeSendRequest(sendPayload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeVerifyRequest(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := messages.DecodeVerifyRequest(verifyPayload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeInvalid(b *testing.B) {
	payload := []byte(`{"phone_number":"202-555-0163"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := messages.DecodeSendRequest(payload); err == nil {
			b.Fatal("accepted an invalid number")
		}
	}
}

func BenchmarkEncodeSendResult(b *testing.B) {
	res := messages.SendResult{Status: messages.StatusSent, RequestID: "3d50e1584e0946e789e0185c009aaadf", CorrelationID: "signup-42", Attempts: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(res); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMaskPhone(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = messages.MaskPhone("+12025550163")
	}
}
