package messages_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

func TestNewSubjects(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		want   messages.Subjects
	}{
		{name: "default", prefix: messages.DefaultPrefix, want: messages.Subjects{
			Send:          "idenfy.phone.send",
			Verify:        "idenfy.phone.verify",
			JobsSend:      "idenfy.phone.jobs.send",
			JobsVerify:    "idenfy.phone.jobs.verify",
			Jobs:          "idenfy.phone.jobs.>",
			ResultsSend:   "idenfy.phone.results.send",
			ResultsVerify: "idenfy.phone.results.verify",
			Results:       "idenfy.phone.results.>",
		}},
		{name: "one token", prefix: "otp", want: messages.Subjects{
			Send:          "otp.send",
			Verify:        "otp.verify",
			JobsSend:      "otp.jobs.send",
			JobsVerify:    "otp.jobs.verify",
			Jobs:          "otp.jobs.>",
			ResultsSend:   "otp.results.send",
			ResultsVerify: "otp.results.verify",
			Results:       "otp.results.>",
		}},
		{name: "custom", prefix: "acme.eu-1.idenfy_phone", want: messages.Subjects{
			Send:          "acme.eu-1.idenfy_phone.send",
			Verify:        "acme.eu-1.idenfy_phone.verify",
			JobsSend:      "acme.eu-1.idenfy_phone.jobs.send",
			JobsVerify:    "acme.eu-1.idenfy_phone.jobs.verify",
			Jobs:          "acme.eu-1.idenfy_phone.jobs.>",
			ResultsSend:   "acme.eu-1.idenfy_phone.results.send",
			ResultsVerify: "acme.eu-1.idenfy_phone.results.verify",
			Results:       "acme.eu-1.idenfy_phone.results.>",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := messages.ValidatePrefix(tt.prefix); err != nil {
				t.Fatalf("ValidatePrefix(%q) = %v, want nil", tt.prefix, err)
			}
			got := messages.NewSubjects(tt.prefix)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NewSubjects(%q) mismatch (-want +got):\n%s", tt.prefix, diff)
			}
		})
	}
}

func TestValidatePrefix(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		ok     bool
	}{
		{name: "default", prefix: "idenfy.phone", ok: true},
		{name: "single token", prefix: "idenfy", ok: true},
		{name: "dashes and underscores", prefix: "a-b.c_d.0", ok: true},
		{name: "empty", prefix: ""},
		{name: "star token", prefix: "idenfy.*"},
		{name: "star inside token", prefix: "idenfy.ph*ne"},
		{name: "full wildcard token", prefix: ">"},
		{name: "full wildcard at end", prefix: "idenfy.>"},
		{name: "gt inside token", prefix: "idenfy.a>b"},
		{name: "space", prefix: "idenfy phone"},
		{name: "leading space", prefix: " idenfy.phone"},
		{name: "trailing space", prefix: "idenfy.phone "},
		{name: "tab", prefix: "idenfy.\tphone"},
		{name: "newline", prefix: "idenfy.phone\n"},
		{name: "carriage return", prefix: "idenfy\r.phone"},
		{name: "NUL", prefix: "idenfy.\x00"},
		{name: "DEL", prefix: "idenfy.\x7f"},
		{name: "leading dot", prefix: ".idenfy.phone"},
		{name: "trailing dot", prefix: "idenfy.phone."},
		{name: "double dot", prefix: "idenfy..phone"},
		{name: "dot only", prefix: "."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := messages.ValidatePrefix(tt.prefix)
			if (err == nil) != tt.ok {
				t.Errorf("ValidatePrefix(%q) = %v, want ok %v", tt.prefix, err, tt.ok)
			}
		})
	}
}

func TestNewSubjectsPanicsOnBadPrefix(t *testing.T) {
	for _, prefix := range []string{"", "a.*", "a..b", "a b", "a.>"} {
		t.Run(prefix, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatalf("NewSubjects(%q) did not panic", prefix)
				}
				if msg, ok := r.(string); !ok || !strings.HasPrefix(msg, "messages: ") {
					t.Errorf("NewSubjects(%q) panicked with %v, want a string starting %q", prefix, r, "messages: ")
				}
			}()
			messages.NewSubjects(prefix)
		})
	}
}
