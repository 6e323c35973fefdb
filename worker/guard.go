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
func (w *Worker) checkCountry(phone string) *messages.Error {
	if len(w.cfg.AllowedCountries) == 0 {
		return nil
	}
	region := countryOf(phone)
	if region != "" && slices.Contains(w.cfg.AllowedCountries, region) {
		return nil
	}
	if region == "" {
		region = "an unknown country"
	}
	return messages.NewError(messages.CodeCountryNotAllowed,
		fmt.Sprintf("phone numbers of %s are not allowed by this deployment (allowed: %s)", region, strings.Join(w.cfg.AllowedCountries, ",")))
}

// sendLog is the value of a number's counter key: the times of its counted
// sends within the longest window, oldest first, in Unix milliseconds.
type sendLog []int64

// reserveSend counts one send to phone against every limit, cluster-wide: a
// compare-and-swap on the number's key in the limits bucket, so that
// concurrent workers never both take the last place. Over a limit, nothing is
// counted and too_many_sends says when a place frees up.
func (w *Worker) reserveSend(ctx context.Context, phone string) (*messages.Error, error) {
	if len(w.cfg.SendLimits) == 0 {
		return nil, nil
	}
	key := "n." + w.store.hash("phone", phone)
	for i := range 20 {
		now := w.clock.Now()
		var log sendLog
		var rev uint64
		// Most numbers have no counter yet: the first try creates it
		// blind, one round trip; only a conflict reads it.
		if i > 0 {
			entry, err := w.store.limits.Get(ctx, key)
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
		log = log.since(now.Add(-w.longestWindow()))
		if refusal := w.overLimit(log, now); refusal != nil {
			return refusal, nil
		}
		log = append(log, now.UnixMilli())
		value, _ := json.Marshal(log)
		var err error
		if rev == 0 && i > 0 {
			// Read as absent: expired, or a delete marker the client's
			// Create knows how to write over.
			_, err = w.store.limits.Create(ctx, key, value)
		} else {
			_, err = w.store.limits.put(ctx, key, value, rev)
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
func (w *Worker) refundSend(ctx context.Context, phone string) error {
	if w.store.limits == nil {
		return nil
	}
	key := "n." + w.store.hash("phone", phone)
	for range 20 {
		entry, err := w.store.limits.Get(ctx, key)
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
		_, err = w.store.limits.put(ctx, key, value, entry.Revision())
		if !isConflict(err) {
			return err
		}
	}
	return errors.New("send counter stayed contended after 20 tries")
}

func (w *Worker) longestWindow() time.Duration {
	var longest time.Duration
	for _, l := range w.cfg.SendLimits {
		longest = max(longest, l.Window)
	}
	return longest
}

func (w *Worker) overLimit(log sendLog, now time.Time) *messages.Error {
	for _, l := range w.cfg.SendLimits {
		inWindow := log.since(now.Add(-l.Window))
		if len(inWindow) < l.Count {
			continue
		}
		// The oldest send that keeps the window full frees its place first.
		frees := time.UnixMilli(inWindow[len(inWindow)-l.Count]).Add(l.Window)
		// Rounded up: "try again in 9m" must not come a second early.
		wait := (frees.Sub(now) + time.Second - 1).Truncate(time.Second)
		return messages.NewError(messages.CodeTooManySends,
			fmt.Sprintf("this number reached its limit of %d sends per %s; try again in %s", l.Count, formatWindow(l.Window), wait))
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

// isConflict reports whether a KV create or update lost a race.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
