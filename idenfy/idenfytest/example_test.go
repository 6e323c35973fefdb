package idenfytest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
)

// vendor is what the code under test does: call the vendor API at base.
func vendor(base, path, body string, answer any) (status int) {
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(answer); err != nil {
			panic(err)
		}
	}
	return resp.StatusCode
}

func Example() {
	start := time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)
	s := idenfytest.NewServer(nil, idenfytest.WithClock(start)) // in a test: NewServer(t, ...)
	defer s.Close()

	var sent struct {
		RequestID string `json:"request_id"`
	}
	vendor(s.URL, "/fraud/send-sms", `{"phone_number": "+12025550163", "sender_name": "The Sender"}`, &sent)

	s.Advance(2 * time.Minute) // not verified yet: the vendor calls
	out := s.Outbox("+12025550163")
	for _, d := range out {
		fmt.Println(d.At.Format("15:04"), d.Channel, len(d.Code), "digits")
	}
	fmt.Println(strings.ReplaceAll(out[0].Text, out[0].Code, "####"))

	code, _ := s.LastCode("+12025550163")
	var verify struct {
		IsVerified bool `json:"is_verified"`
	}
	body := fmt.Sprintf(`{"request_id": %q, "received_code": %q}`, sent.RequestID, code)
	vendor(s.URL, "/fraud/verify-sms", body, &verify)
	fmt.Println("verified:", verify.IsVerified)
	vendor(s.URL, "/fraud/verify-sms", body, &verify)
	fmt.Println("verified again:", verify.IsVerified)
	// Output:
	// 09:00 sms 4 digits
	// 09:02 call 4 digits
	// The Sender code: ####. Valid for 5 minutes.
	// verified: true
	// verified again: false
}

func ExampleSimulator_InjectFault() {
	s := idenfytest.NewServer(nil)
	defer s.Close()

	if err := s.InjectFault(idenfytest.Fault{Status: http.StatusServiceUnavailable, Count: 2}); err != nil {
		panic(err)
	}
	var sent struct {
		RequestID string `json:"request_id"`
	}
	for range 3 {
		fmt.Println(vendor(s.URL, "/fraud/send-sms", `{"phone_number": "+12025550163"}`, &sent))
	}
	fmt.Println(s.Stats().SendSMS, "calls,", len(s.Outbox("+12025550163")), "SMS")
	// Output:
	// 503
	// 503
	// 200
	// 3 calls, 1 SMS
}

func ExampleServer_Client() {
	s := idenfytest.NewServer(nil, idenfytest.WithClock(time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)))
	defer s.Close()

	c := s.Client(idenfy.WithTimeout(2 * time.Second))
	sent, err := c.SendSMS(context.Background(), idenfy.SendSMSRequest{PhoneNumber: "+12025550163"})
	if err != nil {
		panic(err)
	}
	code, _ := s.LastCode("+12025550163")
	verified, err := c.VerifySMS(context.Background(), idenfy.VerifySMSRequest{RequestID: sent.RequestID, ReceivedCode: code})
	if err != nil {
		panic(err)
	}
	fmt.Println("verified:", verified.IsVerified)
	// Output:
	// verified: true
}
