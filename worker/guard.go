package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nyaruka/phonenumbers"

	"github.com/idenfy-worker/idenfy-worker/messages"
)

// guard is the anti-pumping guard (README, "Anti-pumping"): the country
// allow-list and the blocked number types, decided locally; the pumping
// guard's paused ranges, read from its watched view; and the per-number
// send limits, counted cluster-wide in the limits bucket with
// compare-and-swap so that ten workers enforce one limit.
type guard struct {
	countries []string
	blocked   []string
	limits    []SendLimit
	bucket    *bucket     // nil when send limits are off; set by Start
	ranges    *rangeGuard // nil when the pumping guard is off
	hash      *hasher
	clock     Clock
	metrics   *metrics
}

// check refuses, without any round trip, a send the guard's local rules
// forbid. It comes before the send limits, so that a refused send does not
// use up the number's allowance.
func (g *guard) check(phone string) *messages.Error {
	if e := g.checkCountry(phone); e != nil {
		g.metrics.guardRejected("country")
		return e
	}
	if e := checkNumberType(g.blocked, phone); e != nil {
		g.metrics.guardRejected("number_type")
		return e
	}
	if e := g.ranges.check(phone); e != nil {
		g.metrics.guardRejected("pumping")
		return e
	}
	return nil
}

// sent tells the pumping guard of a send that reached iDenfy and got a
// request_id. The SMS is out whatever happens here: a failure is logged,
// not answered.
func (g *guard) sent(ctx context.Context, t *task, requestID string) {
	if g.ranges == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := g.ranges.recordSend(ctx, t.send.PhoneNumber, requestID); err != nil {
		t.logger().Warn().Err(err).Msg("counting the send in its range for the pumping guard failed")
	}
}

// verified tells the pumping guard that a code sent for requestID was
// verified: its range has a real user.
func (g *guard) verified(ctx context.Context, t *task, requestID string) {
	if g.ranges == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := g.ranges.recordVerified(ctx, requestID); err != nil {
		t.logger().Warn().Err(err).Msg("marking the verify in its range for the pumping guard failed")
	}
}

// reserve counts a send against the number's limits; refusal is set when
// the number is over one.
func (g *guard) reserve(ctx context.Context, phone string) (refusal *messages.Error, err error) {
	refusal, err = g.reserveSend(ctx, phone)
	if refusal != nil {
		g.metrics.guardRejected("send_limit")
	}
	return refusal, err
}

// settle gives back the send-limit place of a send that ended in failure
// without any attempt that may have reached iDenfy: nobody was texted, so
// an outage must not eat the allowance of the users who lived through it. A
// job handed back keeps its place for its next delivery.
func (g *guard) settle(t *task, o *outcome) {
	if t.op != opSend || !o.counted || o.handBack || o.a.ambiguous || o.send.Status != messages.StatusFailed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := g.refundSend(ctx, t.send.PhoneNumber); err != nil {
		t.logger().Warn().Err(err).Msg("giving back the send-limit place of a failed send failed")
		return
	}
	o.counted = false
}

// longestWindow is the life of a send counter: the longest limit window.
func longestWindow(limits []SendLimit) time.Duration {
	var longest time.Duration
	for _, l := range limits {
		longest = max(longest, l.Window)
	}
	return longest
}

// countryOf returns the ISO region of an E.164 number, decided by its
// calling code and, where several countries share one (+1, +7, +44...), by
// its leading digits.
func countryOf(phone string) string {
	num, err := phonenumbers.Parse(phone, "")
	if err != nil {
		return ""
	}
	if region := phonenumbers.GetRegionCodeForNumber(num); region != "" {
		return region
	}
	return phonenumbers.GetRegionCodeForCountryCode(int(num.GetCountryCode()))
}

// checkCountry answers country_not_allowed for a number outside the
// allow-list.
func (g *guard) checkCountry(phone string) *messages.Error {
	if len(g.countries) == 0 {
		return nil
	}
	region := countryOf(phone)
	if region != "" && slices.Contains(g.countries, region) {
		return nil
	}
	if region == "" {
		region = "an unknown country"
	}
	return messages.NewError(messages.CodeCountryNotAllowed,
		fmt.Sprintf("phone numbers of %s are not allowed by this deployment (allowed: %s)", region, strings.Join(g.countries, ",")))
}

// sendLog is the value of a number's counter key: the times of its counted
// sends within the longest window, oldest first, in Unix milliseconds.
type sendLog []int64

// reserveSend counts one send to phone against every limit, cluster-wide: a
// compare-and-swap on the number's key in the limits bucket, so that
// concurrent workers never both take the last place. Over a limit, nothing is
// counted and too_many_sends says when a place frees up.
func (g *guard) reserveSend(ctx context.Context, phone string) (*messages.Error, error) {
	if g.bucket == nil {
		return nil, nil
	}
	key := g.counterKey(phone)
	for i := range 20 {
		now := g.clock.Now()
		var log sendLog
		var rev uint64
		// Most numbers have no counter yet: the first try creates it
		// blind, one round trip; only a conflict reads it.
		if i > 0 {
			entry, err := g.bucket.Get(ctx, key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
			case err != nil:
				return nil, fmt.Errorf("reading send counter: %w", err)
			default:
				rev = entry.Revision()
				if json.Unmarshal(entry.Value(), &log) != nil {
					log = nil // a damaged counter is reset rather than blocking the number forever
				}
			}
		}
		log = log.since(now.Add(-longestWindow(g.limits)))
		if refusal := overLimit(g.limits, log, now); refusal != nil {
			return refusal, nil
		}
		log = append(log, now.UnixMilli())
		value, _ := json.Marshal(log)
		var err error
		if rev == 0 && i > 0 {
			// Read as absent: expired, or a delete marker the client's
			// Create knows how to write over.
			_, err = g.bucket.Create(ctx, key, value)
		} else {
			_, err = g.bucket.put(ctx, key, value, rev)
		}
		if err == nil {
			return nil, nil
		}
		if !isConflict(err) {
			return nil, fmt.Errorf("writing send counter: %w", err)
		}
	}
	return nil, errors.New("send counter stayed contended after 20 tries")
}

// refundSend takes back the newest counted send of phone. It is for a
// send that surely texted nobody (every attempt failed before reaching
// iDenfy, or iDenfy refused it), so that an outage does not eat the
// allowance of the users who lived through it.
func (g *guard) refundSend(ctx context.Context, phone string) error {
	if g.bucket == nil {
		return nil
	}
	key := g.counterKey(phone)
	for range 20 {
		entry, err := g.bucket.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var log sendLog
		if json.Unmarshal(entry.Value(), &log) != nil || len(log) == 0 {
			return nil
		}
		value, _ := json.Marshal(log[:len(log)-1])
		_, err = g.bucket.put(ctx, key, value, entry.Revision())
		if !isConflict(err) {
			return err
		}
	}
	return errors.New("send counter stayed contended after 20 tries")
}

// overLimit returns too_many_sends when log, the counted sends of a number,
// leaves no place under one of limits at now.
func overLimit(limits []SendLimit, log sendLog, now time.Time) *messages.Error {
	for _, l := range limits {
		inWindow := log.since(now.Add(-l.Window))
		if len(inWindow) < l.Count {
			continue
		}
		// The oldest send that keeps the window full frees its place first.
		frees := time.UnixMilli(inWindow[len(inWindow)-l.Count]).Add(l.Window)
		// Rounded up: "try again in 9m" must not come a second early.
		wait := (frees.Sub(now) + time.Second - 1).Truncate(time.Second)
		e := messages.NewError(messages.CodeTooManySends,
			fmt.Sprintf("this number reached its limit of %d sends per %s; try again in %s", l.Count, formatWindow(l.Window), wait))
		e.RetryAfter = int(wait / time.Second)
		return e
	}
	return nil
}

// since returns the entries at or after t.
func (s sendLog) since(t time.Time) sendLog {
	cut := t.UnixMilli()
	for i, at := range s {
		if at > cut {
			return s[i:]
		}
	}
	return nil
}

// counterKey is the limits-bucket key of a number's send counter.
func (g *guard) counterKey(phone string) string { return "n." + g.hash.sum("phone", phone) }
