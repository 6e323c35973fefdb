package worker

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestParseAck(t *testing.T) {
	tests := []struct {
		name     string
		ack      string
		want     uint64
		conflict bool
		fails    bool
	}{
		{name: "stored", ack: `{"stream":"KV_idenfy_phone","seq":42}`, want: 42},
		{name: "stored with domain", ack: `{"stream":"KV_x","domain":"hub","seq":7}`, want: 7},
		{name: "duplicate", ack: `{"stream":"KV_x","seq":9,"duplicate":true}`, want: 9},
		{name: "wrong last sequence", ack: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"KV_x","seq":0}`, conflict: true},
		{name: "wrong last sequence, replicated", ack: `{"error":{"code":400,"err_code":10164,"description":"wrong last sequence"}}`, conflict: true},
		{name: "other error", ack: `{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`, fails: true},
		{name: "no sequence", ack: `{"stream":"KV_x"}`, fails: true},
		{name: "zero sequence", ack: `{"stream":"KV_x","seq":0}`, fails: true},
		{name: "garbage", ack: `<html>`, fails: true},
		{name: "unreadable error", ack: `{"error":`, fails: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAck([]byte(tt.ack))
			switch {
			case tt.conflict:
				if !errors.Is(err, jetstream.ErrKeyExists) || !isConflict(err) {
					t.Errorf("parseAck(%q) = %d, %v; want a conflict", tt.ack, got, err)
				}
			case tt.fails:
				if err == nil || isConflict(err) {
					t.Errorf("parseAck(%q) = %d, %v; want an error that is not a conflict", tt.ack, got, err)
				}
			case err != nil || got != tt.want:
				t.Errorf("parseAck(%q) = %d, %v; want %d", tt.ack, got, err, tt.want)
			}
		})
	}
}
