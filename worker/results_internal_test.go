package worker

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// TestOutcomeLineFollowsTheLevel: the outcome line of a request is written
// at info, or at warn when the request failed for a reason other than its
// input; below the logger's level it is not written, and above it, it is.
func TestOutcomeLineFollowsTheLevel(t *testing.T) {
	sent := func(t *task) *outcome {
		return &outcome{op: opSend, send: messages.SendResult{Status: messages.StatusSent, RequestID: "r1"}}
	}
	unavailable := func(t *task) *outcome {
		return failed(t, attempts{count: 3}, messages.NewError(messages.CodeUpstreamUnavailable, "iDenfy answered 503"))
	}
	invalid := func(t *task) *outcome {
		return failed(t, attempts{}, messages.NewError(messages.CodeInvalidPhoneNumber, "phone_number must be E.164"))
	}
	tests := []struct {
		name    string
		level   zerolog.Level
		outcome func(*task) *outcome
		want    string // the level written; "" for no line
	}{
		{name: "sent at info", level: zerolog.InfoLevel, outcome: sent, want: "info"},
		{name: "sent below warn", level: zerolog.WarnLevel, outcome: sent, want: ""},
		{name: "invalid input below warn", level: zerolog.WarnLevel, outcome: invalid, want: ""},
		{name: "outage at warn", level: zerolog.WarnLevel, outcome: unavailable, want: "warn"},
		{name: "outage below error", level: zerolog.ErrorLevel, outcome: unavailable, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := &Worker{log: zerolog.New(&buf).Level(tt.level), hash: newHasher([]byte("k"))}
			tk := &task{op: opSend, intake: intakeRequest, w: w, key: "k-1",
				send: messages.SendRequest{PhoneNumber: "+12025550163", CorrelationID: "c-1"}}
			logOutcome(tk, tt.outcome(tk), 0)
			line := buf.String()
			switch {
			case tt.want == "" && line != "":
				t.Errorf("logOutcome at level %s wrote %q, want nothing", tt.level, line)
			case tt.want != "" && !strings.Contains(line, `"level":"`+tt.want+`"`):
				t.Errorf("logOutcome at level %s wrote %q, want a %s line", tt.level, line, tt.want)
			case strings.Contains(line, "+12025550163"):
				t.Errorf("logOutcome wrote the full number: %q", line)
			}
		})
	}
}
