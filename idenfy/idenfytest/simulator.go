// Package idenfytest is an in-process simulator of the iDenfy phone
// verification API, for tests, in the spirit of net/http/httptest:
//
//	s := idenfytest.NewServer(t, idenfytest.WithClock(start)) // real HTTP on s.URL, closed by t.Cleanup
//	code, ok := s.LastCode("+12025550163")                    // what your code under test had "texted"
//
// Server.Client is the real idenfy.Client configured for the server, its URL
// and the credentials it expects, as httptest.Server.Client is:
//
//	c := s.Client(idenfy.WithTimeout(2 * time.Second)) // options as idenfy.NewClient takes them
//	sent, err := c.SendSMS(ctx, idenfy.SendSMSRequest{PhoneNumber: "+12025550163"})
//
// The simulator answers POST /fraud/send-sms and POST /fraud/verify-sms like
// the vendor: HTTP basic auth (DefaultAPIKey, DefaultAPISecret), the same
// validations and error bodies, random 32-hex request_ids and random 4-digit
// codes. It runs the vendor's timeline on its own clock, with t0 the send
// time: an SMS with code A at t0; if not verified, a voice call reading A at
// t0+2m; A is valid until t0+5m; then a call with a new code B at t0+5m, valid
// until t0+10m. A verified request gets no further calls, and every later
// verify of it answers false ("already validated"), as do all verifies after
// WithMaxAttempts wrong codes.
//
// Time never ticks by itself under WithClock: tests move it with Advance or
// SetTime, never by sleeping. What was "texted" or "called" is in Outbox, and
// WithDeliveryHook sees each delivery as it happens. InjectFault makes vendor
// calls fail (status codes, latency, dropped connections), optionally after
// they took effect.
//
// The same handler serves a control API without auth, which is how tests in
// other processes and people drive cmd/idenfy-sim:
//
//	GET  /_sim/outbox?phone_number=+1...   Outbox, as a JSON array (a "+" that decoded as a space is accepted)
//	GET  /_sim/clock                       {"now": RFC 3339}
//	POST /_sim/clock  {"advance": "2m30s"} Advance; answers {"now": ...}
//	GET  /_sim/faults                      the current faults
//	POST /_sim/faults  a Fault as JSON     InjectFault ({} clears); answers the current faults
//	GET  /_sim/stats                       Stats
//
// Other paths answer 404, other methods 405, bodies over 64 KiB 413, all with
// JSON bodies. Where the vendor's documentation is silent the simulator
// assumes: a request_id that was never issued answers 400 BAD_VALUE
// "request_id not found"; a 4-character code that is not all digits is a wrong
// code (is_verified false, and it counts as a wrong attempt); wrong attempts
// are counted per request_id across codes A and B; fields must be JSON
// strings. It keeps every request and delivery for its lifetime, a few hundred
// bytes per send.
package idenfytest

import (
	"container/heap"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the options.
const (
	DefaultAPIKey      = "sandbox-key"
	DefaultAPISecret   = "sandbox-secret"
	DefaultMaxAttempts = 3
	DefaultSenderName  = "iDenfy" // the vendor's sender_name when none is given
)

// Delivery channels.
const (
	ChannelSMS  = "sms"
	ChannelCall = "call"
)

// A Delivery is one SMS or voice call the simulator "made" to a phone number.
type Delivery struct {
	PhoneNumber string    `json:"phone_number"`
	Channel     string    `json:"channel"` // ChannelSMS or ChannelCall
	Code        string    `json:"code"`
	RequestID   string    `json:"request_id"`
	SenderName  string    `json:"sender_name"`
	Text        string    `json:"text"` // what the SMS said or the call read out
	At          time.Time `json:"at"`   // on the simulator's clock
}

// Stats counts the vendor calls received on each path: answered or not,
// faulted or not, authorized or not.
type Stats struct {
	SendSMS   int64 `json:"send_sms"`
	VerifySMS int64 `json:"verify_sms"`
}

// A Simulator is the fake vendor: an http.Handler serving the vendor API and
// the /_sim/ control API, plus methods to inspect and steer it from Go. It is
// safe for concurrent use. Use NewServer to serve it over real HTTP.
type Simulator struct {
	apiKey      string
	apiSecret   string
	maxAttempts int
	hook        func(Delivery)
	frozen      bool // WithClock: only Advance and SetTime move the clock
	epoch       time.Time

	sendCalls   atomic.Int64
	verifyCalls atomic.Int64

	mu       sync.Mutex
	offset   time.Duration // added by Advance and SetTime
	requests map[string]*request
	calls    callQueue
	outbox   map[string][]Delivery
	faults   faultState
	hooks    hookQueue

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	ticker    sync.WaitGroup
}

// An Option configures a Simulator.
type Option func(*Simulator)

// WithCredentials sets the API key and secret that basic auth must present
// (defaults DefaultAPIKey and DefaultAPISecret).
func WithCredentials(apiKey, apiSecret string) Option {
	return func(s *Simulator) { s.apiKey, s.apiSecret = apiKey, apiSecret }
}

// WithMaxAttempts sets how many wrong codes a request_id takes before every
// verify of it answers false, even with the right code (default
// DefaultMaxAttempts). n must be at least 1.
func WithMaxAttempts(n int) Option {
	return func(s *Simulator) { s.maxAttempts = n }
}

// WithClock freezes the simulator's clock at start: from then on only Advance
// and SetTime move it. Without WithClock the simulator runs on the wall clock
// plus whatever Advance added, so people watching cmd/idenfy-sim see the calls
// arrive in real time.
func WithClock(start time.Time) Option {
	return func(s *Simulator) { s.frozen, s.epoch = true, start }
}

// WithDeliveryHook calls hook for every SMS and call delivered, in delivery
// order, one at a time and outside the simulator's lock. Before Advance,
// SetTime or a send-sms answer returns, the hook has seen what they delivered.
// So the hook may use the Simulator and its HTTP API except for those three:
// they would wait for the hook, which waits for them.
func WithDeliveryHook(hook func(Delivery)) Option {
	return func(s *Simulator) { s.hook = hook }
}

// NewSimulator returns a Simulator configured by opts. Invalid options panic.
// Without WithClock and with a delivery hook, it runs a goroutine that
// delivers due calls about once a second so the hook fires on time; Close
// stops it.
func NewSimulator(opts ...Option) *Simulator {
	s, err := newSimulator(opts...)
	if err != nil {
		panic("idenfytest: " + err.Error())
	}
	return s
}

// newSimulator is NewSimulator returning invalid options as an error, so
// that NewServer can fail its test with it.
func newSimulator(opts ...Option) (*Simulator, error) {
	s := &Simulator{
		apiKey:      DefaultAPIKey,
		apiSecret:   DefaultAPISecret,
		maxAttempts: DefaultMaxAttempts,
		requests:    make(map[string]*request),
		outbox:      make(map[string][]Delivery),
		done:        make(chan struct{}),
	}
	s.hooks.done.L = &s.mu
	for _, opt := range opts {
		opt(s)
	}
	switch {
	case s.apiKey == "" || s.apiSecret == "":
		return nil, errors.New("WithCredentials: empty API key or secret")
	case s.maxAttempts < 1:
		return nil, fmt.Errorf("WithMaxAttempts(%d): must be at least 1", s.maxAttempts)
	}
	if !s.frozen {
		s.epoch = time.Now()
		if s.hook != nil {
			s.ticker.Add(1)
			go s.tick()
		}
	}
	return s, nil
}

// Close stops the background goroutine of a wall-clock Simulator and aborts
// the vendor calls waiting out a latency fault (their connections are
// dropped). The Simulator's state stays readable. Close is idempotent.
func (s *Simulator) Close() {
	s.closeOnce.Do(func() { close(s.done) })
	s.ticker.Wait()
}

func (s *Simulator) tick() {
	defer s.ticker.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.Now()
		}
	}
}

// Now returns the simulator's time, delivering the calls due by then.
func (s *Simulator) Now() time.Time {
	s.mu.Lock()
	now := s.observeLocked()
	s.mu.Unlock()
	s.runHooks(false)
	return now
}

// Advance moves the clock forward by d; d <= 0 does not move it. The calls
// due by the new time are delivered, and the delivery hook has seen them,
// before Advance returns.
func (s *Simulator) Advance(d time.Duration) {
	s.mu.Lock()
	if d > 0 {
		s.offset += d
	}
	s.observeLocked()
	s.mu.Unlock()
	s.runHooks(true)
}

// SetTime moves the clock forward to t, like Advance. The clock never goes
// backwards: a t before Now leaves it where it is.
func (s *Simulator) SetTime(t time.Time) {
	s.mu.Lock()
	if d := t.Sub(s.clockLocked()); d > 0 {
		s.offset += d
	}
	s.observeLocked()
	s.mu.Unlock()
	s.runHooks(true)
}

// Outbox returns a copy of what was delivered to phoneNumber, oldest first:
// an empty, non-nil slice if nothing was.
func (s *Simulator) Outbox(phoneNumber string) []Delivery {
	s.mu.Lock()
	s.observeLocked()
	out := append([]Delivery{}, s.outbox[phoneNumber]...)
	s.mu.Unlock()
	s.runHooks(false)
	return out
}

// LastCode returns the code of the newest delivery to phoneNumber.
func (s *Simulator) LastCode(phoneNumber string) (string, bool) {
	out := s.Outbox(phoneNumber)
	if len(out) == 0 {
		return "", false
	}
	return out[len(out)-1].Code, true
}

// Stats returns the number of vendor calls received so far.
func (s *Simulator) Stats() Stats {
	return Stats{SendSMS: s.sendCalls.Load(), VerifySMS: s.verifyCalls.Load()}
}

func (s *Simulator) clockLocked() time.Time {
	if s.frozen {
		return s.epoch.Add(s.offset)
	}
	// time.Since reads the monotonic clock, so wall clock steps do not move
	// the simulator's time backwards.
	return s.epoch.Add(time.Since(s.epoch) + s.offset).UTC()
}

// observeLocked reads the clock and delivers the calls due by then, oldest
// first, stamped with the time they were due.
func (s *Simulator) observeLocked() time.Time {
	now := s.clockLocked()
	for len(s.calls) > 0 && !s.calls[0].at.After(now) {
		c := heap.Pop(&s.calls).(call)
		s.callLocked(c.req, c.at)
	}
	return now
}

func (s *Simulator) deliverLocked(d Delivery) {
	s.outbox[d.PhoneNumber] = append(s.outbox[d.PhoneNumber], d)
	if s.hook != nil {
		s.hooks.queue = append(s.hooks.queue, d)
		s.hooks.queued++
	}
}

// hookQueue hands deliveries to the hook in order without holding the lock
// while it runs. Its fields are guarded by Simulator.mu.
type hookQueue struct {
	queue   []Delivery
	queued  uint64 // deliveries ever queued
	hooked  uint64 // deliveries the hook returned from
	running bool   // a goroutine is calling the hook
	done    sync.Cond
}

// runHooks calls the hook for the queued deliveries unless another goroutine
// already does. With wait, it returns only once the hook saw everything queued
// before the call, whoever called it.
func (s *Simulator) runHooks(wait bool) {
	if s.hook == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q := &s.hooks
	target := q.queued
	for q.running {
		if !wait || q.hooked >= target {
			return
		}
		q.done.Wait()
	}
	q.running = true
	defer func() {
		q.running = false
		q.done.Broadcast()
	}()
	for len(q.queue) > 0 {
		batch := q.queue
		q.queue = nil
		s.callHook(batch)
		q.hooked += uint64(len(batch))
		q.done.Broadcast()
	}
}

// callHook runs the hook with the lock released, and takes it back even if
// the hook panics.
func (s *Simulator) callHook(batch []Delivery) {
	s.mu.Unlock()
	defer s.mu.Lock()
	for _, d := range batch {
		s.hook(d)
	}
}
