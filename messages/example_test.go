package messages_test

import (
	"errors"
	"fmt"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

func ExampleDecodeSendRequest() {
	req, err := messages.DecodeSendRequest([]byte(`{"phone_number": "+1 202-555-0163", "correlation_id": "signup-42"}`))
	var e *messages.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code, e.Retryable)
		fmt.Println(e.Message)
		fmt.Println(req.CorrelationID)
	}
	// Output:
	// invalid_phone_number false
	// phone_number must be E.164: '+', then 7 to 15 digits starting with the country code (not 0), no spaces or dashes
	// signup-42
}

func ExampleDecodeVerifyRequest() {
	req, err := messages.DecodeVerifyRequest([]byte(`{"request_id": "3d50e1584e0946e789e0185c009aaadf", "received_code": "1234"}`))
	fmt.Println(req.RequestID, req.ReceivedCode, err)
	// Output:
	// 3d50e1584e0946e789e0185c009aaadf 1234 <nil>
}

func ExampleMaskPhone() {
	fmt.Println(messages.MaskPhone("+12025550163"))
	fmt.Println(messages.MaskPhone("+447911123456"))
	fmt.Println(messages.MaskPhone("+37060012345"))
	fmt.Println(messages.MaskPhone("+1 202 555 0163"))
	// Output:
	// +1********63
	// +44********56
	// +370******45
	// <masked>
}

func ExampleRedactText() {
	fmt.Println(messages.RedactText("HTTP 400: code 1234 for +12025550163 is invalid"))
	// Output:
	// HTTP 400: code **** for +*********** is invalid
}

func ExampleNewSubjects() {
	s := messages.NewSubjects(messages.DefaultPrefix)
	fmt.Println(s.Send)
	fmt.Println(s.Verify)
	fmt.Println(s.JobsSend)
	fmt.Println(s.JobsVerify)
	fmt.Println(s.Jobs)
	fmt.Println(s.ResultsSend)
	fmt.Println(s.ResultsVerify)
	// Output:
	// idenfy.phone.send
	// idenfy.phone.verify
	// idenfy.phone.jobs.send
	// idenfy.phone.jobs.verify
	// idenfy.phone.jobs.>
	// idenfy.phone.results.send
	// idenfy.phone.results.verify
}
