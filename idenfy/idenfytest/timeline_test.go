package idenfytest_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
)

const (
	sms  = idenfytest.ChannelSMS
	call = idenfytest.ChannelCall
)

func TestTimeline(t *testing.T) {
	const ns = time.Nanosecond
	tests := []struct {
		name     string
		at       time.Duration // after the send
		code     string        // "A", "B" or "wrong"
		want     bool
		channels []string // the outbox by then
	}{
		{"A at once", 0, "A", true, []string{sms}},
		{"A just before the first call", 2*time.Minute - ns, "A", true, []string{sms}},
		{"A at the first call", 2 * time.Minute, "A", true, []string{sms, call}},
		{"A just before the second call", 5*time.Minute - ns, "A", true, []string{sms, call}},
		{"A at the second call", 5 * time.Minute, "A", false, []string{sms, call, call}},
		{"A after the second call", 7 * time.Minute, "A", false, []string{sms, call, call}},
		{"B at the second call", 5 * time.Minute, "B", true, []string{sms, call, call}},
		{"B just before it expires", 10*time.Minute - ns, "B", true, []string{sms, call, call}},
		{"B when it expires", 10 * time.Minute, "B", false, []string{sms, call, call}},
		{"A when B expires", 10 * time.Minute, "A", false, []string{sms, call, call}},
		{"B long after", 24 * time.Hour, "B", false, []string{sms, call, call}},
		{"wrong code at once", 0, "wrong", false, []string{sms}},
		{"wrong code in the call window", 3 * time.Minute, "wrong", false, []string{sms, call}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
			id := sendSMS(t, s, phone)
			s.Advance(tt.at)
			out := s.Outbox(phone)
			if got := channels(out); !slices.Equal(got, tt.channels) {
				t.Fatalf("Outbox at t0+%v = %v, want %v", tt.at, got, tt.channels)
			}
			codes := map[string]string{"A": out[0].Code, "wrong": otherCode(out[0].Code)}
			if len(out) == 3 {
				codes["B"] = out[2].Code
			}
			if got := verifySMS(t, s, id, codes[tt.code]); got != tt.want {
				t.Errorf("verify(code %s) at t0+%v = %v, want %v", tt.code, tt.at, got, tt.want)
			}
		})
	}
}

func TestCalls(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	id := sendSMS(t, s, phone)

	s.Advance(5*time.Minute - time.Nanosecond)
	out := s.Outbox(phone)
	a := out[0].Code
	for _, d := range out {
		if d.Code != a {
			t.Errorf("before t0+5m a %s has code %q, want only code A %q", d.Channel, d.Code, a)
		}
	}

	// One step past everything: calls are stamped with the time they were due.
	s.Advance(time.Hour)
	out = s.Outbox(phone)
	if len(out) != 3 {
		t.Fatalf("Outbox(%q) = %v, want sms, call, call", phone, out)
	}
	b := out[2].Code
	if b == a {
		t.Errorf("code B = code A = %q, want a new code", a)
	}
	spoken := func(code string) string {
		return "Your iDenfy verification code is " + strings.Join(strings.Split(code, ""), " ") + "."
	}
	want := []idenfytest.Delivery{
		{PhoneNumber: phone, Channel: sms, Code: a, RequestID: id, SenderName: "iDenfy", Text: "iDenfy code: " + a + ". Valid for 5 minutes.", At: t0},
		{PhoneNumber: phone, Channel: call, Code: a, RequestID: id, SenderName: "iDenfy", Text: spoken(a), At: t0.Add(2 * time.Minute)},
		{PhoneNumber: phone, Channel: call, Code: b, RequestID: id, SenderName: "iDenfy", Text: spoken(b), At: t0.Add(5 * time.Minute)},
	}
	if !slices.Equal(out, want) {
		t.Errorf("Outbox(%q) =\n%+v\nwant\n%+v", phone, out, want)
	}
	if got := s.Now(); !got.Equal(t0.Add(time.Hour + 5*time.Minute - time.Nanosecond)) {
		t.Errorf("Now() = %v, want t0+1h5m-1ns", got)
	}
}

func TestNoCallsAfterVerified(t *testing.T) {
	tests := []struct {
		name     string
		at       time.Duration
		channels []string // the outbox long after
	}{
		{"verified from the SMS", time.Minute, []string{sms}},
		{"verified from the first call", 3 * time.Minute, []string{sms, call}},
		{"verified from the second call", 6 * time.Minute, []string{sms, call, call}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
			id := sendSMS(t, s, phone)
			s.Advance(tt.at)
			code, _ := s.LastCode(phone)
			if !verifySMS(t, s, id, code) {
				t.Fatalf("verify(last code) at t0+%v = false, want true", tt.at)
			}
			s.Advance(time.Hour)
			if got := channels(s.Outbox(phone)); !slices.Equal(got, tt.channels) {
				t.Errorf("Outbox an hour after verifying = %v, want %v", got, tt.channels)
			}
		})
	}
}

func TestAlreadyValidated(t *testing.T) {
	tests := []struct {
		name string
		at   time.Duration
	}{
		{"code A", 0},
		{"code A read by the first call", 3 * time.Minute},
		{"code B", 6 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
			id := sendSMS(t, s, phone)
			s.Advance(tt.at)
			code, _ := s.LastCode(phone)
			for i, want := range []bool{true, false, false} {
				if got := verifySMS(t, s, id, code); got != want {
					t.Errorf("verify #%d of the right code = %v, want %v", i+1, got, want)
				}
			}
		})
	}
}

func TestWrongAttempts(t *testing.T) {
	tests := []struct {
		name        string
		maxAttempts int // 0: the default
		wrong       []string
		at          time.Duration // when the right code is tried, after the wrong ones
		want        bool
	}{
		{"default, 2 wrong", 0, []string{"w", "w"}, 0, true},
		{"default, 3 wrong", 0, []string{"w", "w", "w"}, 0, false},
		{"default, 3 wrong, with letters", 0, []string{"w", "abcd", "w"}, 0, false},
		{"default, 3 wrong, then code B", 0, []string{"w", "w", "w"}, 6 * time.Minute, false},
		{"default, 2 wrong, then code B", 0, []string{"w", "w"}, 6 * time.Minute, true},
		{"1 attempt, none wrong", 1, nil, 0, true},
		{"1 attempt, 1 wrong", 1, []string{"w"}, 0, false},
		{"5 attempts, 4 wrong", 5, []string{"w", "w", "w", "w"}, 0, true},
		{"5 attempts, 5 wrong", 5, []string{"w", "w", "w", "w", "w"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []idenfytest.Option{idenfytest.WithClock(t0)}
			if tt.maxAttempts != 0 {
				opts = append(opts, idenfytest.WithMaxAttempts(tt.maxAttempts))
			}
			s := idenfytest.NewServer(t, opts...)
			id := sendSMS(t, s, phone)
			a, _ := s.LastCode(phone)
			for _, w := range tt.wrong {
				if w == "w" {
					w = otherCode(a)
				}
				if verifySMS(t, s, id, w) {
					t.Fatalf("verify(wrong code %q) = true", w)
				}
			}
			s.Advance(tt.at)
			code, _ := s.LastCode(phone)
			if got := verifySMS(t, s, id, code); got != tt.want {
				t.Errorf("verify(right code) after %d wrong = %v, want %v", len(tt.wrong), got, tt.want)
			}
		})
	}
}

func TestClock(t *testing.T) {
	s := idenfytest.NewSimulator(idenfytest.WithClock(t0))
	defer s.Close()
	steps := []struct {
		name string
		move func()
		want time.Time
	}{
		{"start", func() {}, t0},
		{"Advance", func() { s.Advance(90 * time.Second) }, t0.Add(90 * time.Second)},
		{"Advance backwards", func() { s.Advance(-time.Minute) }, t0.Add(90 * time.Second)},
		{"SetTime", func() { s.SetTime(t0.Add(time.Hour)) }, t0.Add(time.Hour)},
		{"SetTime backwards", func() { s.SetTime(t0) }, t0.Add(time.Hour)},
	}
	for _, st := range steps {
		st.move()
		if got := s.Now(); !got.Equal(st.want) {
			t.Errorf("after %s: Now() = %v, want %v", st.name, got, st.want)
		}
	}
}

// serveDirect runs one vendor call through the Simulator's handler, no server.
func serveDirect(t *testing.T, s *idenfytest.Simulator, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("POST %s = %d %s, want 200", path, w.Code, w.Body)
	}
	return w
}

func TestWallClock(t *testing.T) {
	before := time.Now()
	var (
		mu     sync.Mutex
		hooked []idenfytest.Delivery
	)
	s := idenfytest.NewSimulator(idenfytest.WithDeliveryHook(func(d idenfytest.Delivery) {
		mu.Lock()
		defer mu.Unlock()
		hooked = append(hooked, d)
	}))
	defer s.Close()
	if got := s.Now(); got.Before(before) {
		t.Errorf("Now() = %v, want no earlier than the wall clock %v", got, before)
	}
	serveDirect(t, s, sendPath, sendBody(t, phone))
	s.Advance(time.Hour)
	if got := s.Now(); got.Before(before.Add(time.Hour)) {
		t.Errorf("after Advance(1h): Now() = %v, want no earlier than %v", got, before.Add(time.Hour))
	}
	mu.Lock()
	defer mu.Unlock()
	if got := channels(hooked); !slices.Equal(got, []string{sms, call, call}) {
		t.Errorf("hooked deliveries after Advance(1h) = %v, want sms, call, call", got)
	}
}

func TestDeliveryHook(t *testing.T) {
	var (
		mu     sync.Mutex
		hooked []idenfytest.Delivery
		s      *idenfytest.Server
	)
	hook := func(d idenfytest.Delivery) {
		// The hook may look at the simulator.
		if got := s.Outbox(d.PhoneNumber); !slices.Contains(got, d) {
			t.Errorf("hook(%+v): not in Outbox %v", d, got)
		}
		s.Now()
		mu.Lock()
		defer mu.Unlock()
		hooked = append(hooked, d)
	}
	hookedChannels := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return channels(hooked)
	}
	s = idenfytest.NewServer(t, idenfytest.WithClock(t0), idenfytest.WithDeliveryHook(hook))

	sendSMS(t, s, phone)
	if got, want := hookedChannels(), []string{sms}; !slices.Equal(got, want) {
		t.Errorf("hooked after send-sms = %v, want %v", got, want)
	}
	s.Advance(time.Minute)
	sendSMS(t, s, "+37060000001")
	s.Advance(90 * time.Second) // t0+2m30s: the first call to phone only
	if got, want := hookedChannels(), []string{sms, sms, call}; !slices.Equal(got, want) {
		t.Errorf("hooked after Advance = %v, want %v", got, want)
	}
	s.SetTime(t0.Add(time.Hour))
	if got, want := hookedChannels(), []string{sms, sms, call, call, call, call}; !slices.Equal(got, want) {
		t.Errorf("hooked after SetTime = %v, want %v", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(hooked); i++ {
		if hooked[i].At.Before(hooked[i-1].At) {
			t.Errorf("hooked #%d at %v before #%d at %v, want delivery order", i, hooked[i].At, i-1, hooked[i-1].At)
		}
	}
	var outboxes []idenfytest.Delivery
	for _, n := range []string{phone, "+37060000001"} {
		outboxes = append(outboxes, s.Outbox(n)...)
	}
	slices.SortStableFunc(outboxes, func(a, b idenfytest.Delivery) int { return a.At.Compare(b.At) })
	if !slices.Equal(hooked, outboxes) {
		t.Errorf("hooked = %+v, want the outboxes %+v", hooked, outboxes)
	}
}

func TestOutbox(t *testing.T) {
	const other = "+37060000001"
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	first := sendSMS(t, s, phone)
	s.Advance(time.Minute)
	sendSMS(t, s, other)
	s.Advance(time.Minute)
	second := sendSMS(t, s, phone)
	s.Advance(3 * time.Minute) // t0+5m: phone gets calls of both requests

	type entry struct {
		channel, requestID string
		at                 time.Duration
	}
	var got []entry
	for _, d := range s.Outbox(phone) {
		got = append(got, entry{d.Channel, d.RequestID, d.At.Sub(t0)})
	}
	want := []entry{
		{sms, first, 0},
		{call, first, 2 * time.Minute},
		{sms, second, 2 * time.Minute},
		{call, first, 5 * time.Minute},
		{call, second, 4 * time.Minute},
	}
	slices.SortStableFunc(want, func(a, b entry) int { return cmp.Compare(a.at, b.at) })
	if !slices.Equal(got, want) {
		t.Errorf("Outbox(%q) = %v, want %v", phone, got, want)
	}
	if got := channels(s.Outbox(other)); !slices.Equal(got, []string{sms, call}) {
		t.Errorf("Outbox(%q) = %v, want sms, call", other, got)
	}

	out := s.Outbox(phone)
	out[0].Code = "none"
	if s.Outbox(phone)[0].Code == "none" {
		t.Error("changing what Outbox returned changed the outbox")
	}
	if got := s.Outbox("+19999999999"); got == nil || len(got) != 0 {
		t.Errorf("Outbox(unknown) = %#v, want an empty slice", got)
	}
}

func TestLastCode(t *testing.T) {
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0))
	if code, ok := s.LastCode(phone); ok {
		t.Errorf("LastCode(%q) before any send = %q, true; want false", phone, code)
	}
	sendSMS(t, s, phone)
	s.Advance(5 * time.Minute)
	out := s.Outbox(phone)
	if code, ok := s.LastCode(phone); !ok || code != out[len(out)-1].Code {
		t.Errorf("LastCode(%q) = %q, %v; want code B %q", phone, code, ok, out[len(out)-1].Code)
	}
}

func TestConcurrentUse(t *testing.T) {
	const n = 200
	var (
		mu     sync.Mutex
		hooked int
	)
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0), idenfytest.WithDeliveryHook(func(idenfytest.Delivery) {
		mu.Lock()
		hooked++
		mu.Unlock()
	}))
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			number := fmt.Sprintf("+1202555%04d", i)
			var sent struct {
				RequestID string `json:"request_id"`
			}
			if err := post(t.Context(), s, sendPath, fmt.Sprintf(`{"phone_number": %q}`, number), &sent); err != nil {
				t.Errorf("send-sms(%q): %v", number, err)
				return
			}
			ids[i] = sent.RequestID
			code, _ := s.LastCode(number)
			var verified struct {
				IsVerified bool `json:"is_verified"`
			}
			body := fmt.Sprintf(`{"request_id": %q, "received_code": %q}`, sent.RequestID, code)
			if err := post(t.Context(), s, verifyPath, body, &verified); err != nil || !verified.IsVerified {
				t.Errorf("verify-sms(%q) = %v, %v; want true", number, verified.IsVerified, err)
			}
		})
	}
	for range 50 {
		wg.Go(func() { s.Advance(time.Second) })
	}
	wg.Wait()

	slices.Sort(ids)
	if len(slices.Compact(ids)) != n {
		t.Errorf("%d sends got %d distinct request_ids", n, len(slices.Compact(ids)))
	}
	if got, want := s.Stats(), (idenfytest.Stats{SendSMS: n, VerifySMS: n}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	delivered := 0
	for i := range n {
		delivered += len(s.Outbox(fmt.Sprintf("+1202555%04d", i)))
	}
	mu.Lock()
	defer mu.Unlock()
	if delivered != n || hooked != n {
		t.Errorf("delivered %d, hooked %d, want %d SMS and no calls", delivered, hooked, n)
	}
}

// post is a vendor call that is safe to make from any goroutine.
func post(ctx context.Context, s *idenfytest.Server, path, body string, answer any) error {
	req, err := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth(idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret)
	r, err := try(ctx, req)
	if err != nil {
		return err
	}
	if r.status != http.StatusOK {
		return fmt.Errorf("status %d %s", r.status, r.body)
	}
	return json.Unmarshal(r.body, answer)
}

// TestAdvanceWaitsForHook checks that Advance returns only once the hook saw
// what it delivered, even while another goroutine is calling the hook.
func TestAdvanceWaitsForHook(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var (
		once   sync.Once
		mu     sync.Mutex
		hooked []string
	)
	s := idenfytest.NewServer(t, idenfytest.WithClock(t0), idenfytest.WithDeliveryHook(func(d idenfytest.Delivery) {
		once.Do(func() { // the SMS: hold the hook
			close(entered)
			<-release
		})
		mu.Lock()
		defer mu.Unlock()
		hooked = append(hooked, d.Channel)
	}))
	sent := make(chan error)
	go func() { sent <- post(t.Context(), s, sendPath, sendBody(t, phone), &struct{}{}) }()
	<-entered

	advanced := make(chan []string)
	go func() {
		s.Advance(2 * time.Minute)
		mu.Lock()
		defer mu.Unlock()
		advanced <- slices.Clone(hooked)
	}()
	for !s.Now().Equal(t0.Add(2 * time.Minute)) { // Advance has queued the call
		runtime.Gosched()
	}
	close(release)
	if got, want := <-advanced, []string{sms, call}; !slices.Equal(got, want) {
		t.Errorf("hooked when Advance returned = %v, want %v", got, want)
	}
	if err := <-sent; err != nil {
		t.Errorf("send-sms: %v", err)
	}
}
