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

// SendLimit allows Count sends to one number within Window.
type SendLimit struct {
	Count  int
	Window time.Duration
}

func (l SendLimit) String() string {
	return fmt.Sprintf("%d/%s", l.Count, formatWindow(l.Window))
}

// DefaultSendLimits are the per-number limits when none are configured.
var DefaultSendLimits = []SendLimit{{Count: 3, Window: 10 * time.Minute}, {Count: 10, Window: 24 * time.Hour}}

// ParseSendLimits reads "3/10m,10/24h"; "off" (or "") means no limits.
func ParseSendLimits(s string) ([]SendLimit, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "off") {
		return nil, nil
	}
	var limits []SendLimit
	for _, part := range strings.Split(s, ",") {
		n, per, err := parseRate(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		limits = append(limits, SendLimit{Count: n, Window: per})
	}
	return limits, nil
}

// parseRate reads "N/duration", with "1h", "10m", "24h", "1d" forms; a bare
// unit means one of it ("10/h").
func parseRate(s string) (int, time.Duration, error) {
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not of the form COUNT/DURATION, e.g. 3/10m", s)
	}
	var n int
	if _, err := fmt.Sscanf(num, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != num {
		return 0, 0, fmt.Errorf("%q: count %q is not a positive whole number", s, num)
	}
	per, err := parseWindow(unit)
	if err != nil {
		return 0, 0, fmt.Errorf("%q: %w", s, err)
	}
	return n, per, nil
}

func parseWindow(s string) (time.Duration, error) {
	switch s {
	case "s", "m", "h":
		s = "1" + s
	case "d", "1d":
		return 24 * time.Hour, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err == nil && n > 0 && fmt.Sprint(n) == days {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("duration %q is not a duration of at least 1s such as 10m, 1h or 1d", s)
	}
	return d, nil
}

func formatWindow(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

// ParseCountries reads an ISO 3166 alpha-2 list such as "US,GB,LT"; empty
// means every country. Codes phone numbering does not know are refused, so
// that a typo does not silently block a country.
func ParseCountries(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	supported := phonenumbers.GetSupportedRegions()
	var out []string
	for _, c := range strings.Split(s, ",") {
		c = strings.ToUpper(strings.TrimSpace(c))
		if !supported[c] {
			return nil, fmt.Errorf("%q is not an ISO 3166 alpha-2 country code with phone numbers", c)
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
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
