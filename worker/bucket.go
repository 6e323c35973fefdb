package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// bucket is a KV bucket with a fast path for the compare-and-swap writes
// that every request makes: one NATS request each, without the general
// client's per-call key regexp and full JSON decoding of the ack. Reads,
// and writes over a deleted key, go through the jetstream client.
type bucket struct {
	jetstream.KeyValue
	nc     *nats.Conn
	prefix string // "$KV.<bucket>."
}

func newBucket(nc *nats.Conn, kv jetstream.KeyValue) *bucket {
	return &bucket{KeyValue: kv, nc: nc, prefix: "$KV." + kv.Bucket() + "."}
}

// headerExpectedLastSubjectSeq makes a write conditional on the key's last
// revision (0: the key never had a value, or it expired).
const headerExpectedLastSubjectSeq = "Nats-Expected-Last-Subject-Sequence"

// put writes value under key if the key's last revision is rev, and
// returns the new revision. A lost race is an error matching
// jetstream.ErrKeyExists, as with the jetstream client.
func (b *bucket) put(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	msg := &nats.Msg{
		Subject: b.prefix + key,
		Data:    value,
		Header:  nats.Header{headerExpectedLastSubjectSeq: []string{strconv.FormatUint(rev, 10)}},
	}
	resp, err := b.nc.RequestMsgWithContext(ctx, msg)
	if errors.Is(err, nats.ErrNoResponders) {
		return 0, fmt.Errorf("KV bucket %s: %w", b.Bucket(), jetstream.ErrNoStreamResponse)
	}
	if err != nil {
		return 0, err
	}
	return parseAck(resp.Data)
}

// parseAck reads a JetStream publish ack: {"stream":"KV_x","seq":7} or
// {"error":{"code":400,"err_code":10071,"description":"..."}}.
func parseAck(data []byte) (uint64, error) {
	if bytes.Contains(data, []byte(`"error"`)) {
		var wire struct {
			Error *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(data, &wire); err != nil || wire.Error == nil {
			return 0, fmt.Errorf("unreadable JetStream ack %q", data)
		}
		if wrongLastSequence(wire.Error) {
			return 0, fmt.Errorf("%w: %s", jetstream.ErrKeyExists, wire.Error.Description)
		}
		return 0, wire.Error
	}
	i := bytes.Index(data, []byte(`"seq":`))
	if i < 0 {
		return 0, fmt.Errorf("JetStream ack %q has no sequence", data)
	}
	digits := data[i+len(`"seq":`):]
	n := 0
	for n < len(digits) && '0' <= digits[n] && digits[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseUint(string(digits[:n]), 10, 64)
	if err != nil || seq == 0 {
		return 0, fmt.Errorf("JetStream ack %q has no sequence", data)
	}
	return seq, nil
}

// isConflict reports whether a KV create or update lost a race, as this
// package's fast path or the jetstream client reports it.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && wrongLastSequence(apiErr)
}

// wrongLastSequence reports whether JetStream refused a conditional write
// because the key had moved on.
func wrongLastSequence(e *jetstream.APIError) bool {
	return e.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		e.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
