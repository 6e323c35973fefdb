package worker

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/messages"
)

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
