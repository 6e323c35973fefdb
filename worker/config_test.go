package worker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// TestValidateReportsEverySetting: a program checks its whole configuration
// before it connects anywhere, and hears of every bad setting at once.
func TestValidateReportsEverySetting(t *testing.T) {
	if err := (worker.Config{}).Validate(); err != nil {
		t.Fatalf("Validate() of the defaults = %v, want nil", err)
	}
	cfg := worker.Config{
		Prefix:      "bad prefix",
		Replicas:    7,
		Concurrency: -1,
		ResultTTL:   30 * time.Second,
		RateLimit:   worker.RateLimit{N: 5},
		SendLimits:  []worker.SendLimit{{Count: 0, Window: time.Minute}},
	}
	err := cfg.Validate()
	var got []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *worker.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("Validate() joined %v, want only *FieldError", e)
		}
		got = append(got, fe.Field)
	}
	want := []string{"Concurrency", "Prefix", "RateLimit", "Replicas", "ResultTTL", "SendLimits"}
	if len(got) != len(want) {
		t.Fatalf("Validate() fields = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Validate() fields = %v, want %v", got, want)
			break
		}
	}
}

// TestNewRefusesWithoutDependencies: New names what is missing and matches
// ErrInvalidConfig.
func TestNewRefusesWithoutDependencies(t *testing.T) {
	_, err := worker.New(worker.Config{})
	if !errors.Is(err, worker.ErrInvalidConfig) {
		t.Fatalf("New(Config{}) = %v, want ErrInvalidConfig", err)
	}
	joined := err.(interface{ Unwrap() []error }).Unwrap()[1]
	for _, field := range []string{"Conn", "Client", "HashKey"} {
		found := false
		for _, e := range joined.(interface{ Unwrap() []error }).Unwrap() {
			var fe *worker.FieldError
			if errors.As(e, &fe) && fe.Field == field {
				found = true
			}
		}
		if !found {
			t.Errorf("New(Config{}) = %v, want a FieldError for %s", err, field)
		}
	}
}

// TestResultTTLOfLessThanAMinuteIsRefused: New itself refuses a result TTL
// under the README's minimum (Configuration: WORKER_RESULT_TTL), whatever
// the caller validated.
func TestResultTTLOfLessThanAMinuteIsRefused(t *testing.T) {
	client, err := idenfy.NewClient(idenfy.Config{APIKey: "k", APISecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = worker.New(worker.Config{Conn: &nats.Conn{}, Client: client, HashKey: []byte("k"), ResultTTL: 5 * time.Second})
	var fe *worker.FieldError
	if !errors.As(err, &fe) || fe.Field != "ResultTTL" {
		t.Errorf("New with a 5s result TTL = %v, want an error about the result TTL", err)
	}
}
