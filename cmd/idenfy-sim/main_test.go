package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// hang bounds waits for something that must happen, so that a bug fails the
// test instead of hanging it. It is not a measurement.
const hang = time.Minute

// sim is idenfy-sim started by run, and its stderr line by line.
type sim struct {
	t     *testing.T
	url   string
	lines chan string
	stop  func() error
}

func start(t *testing.T, args ...string) *sim {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	stderr, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-addr", "127.0.0.1:0"}, args...), w)
		w.Close()
	}()
	s := &sim{t: t, lines: make(chan string, 100)}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	s.stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(hang):
			return errors.New("run did not return after its context ended")
		}
	})
	t.Cleanup(func() { s.stop() })
	first := s.line(regexp.MustCompile(`^idenfy-sim listening on (http://127\.0\.0\.1:\d+)$`))
	s.url = first[1]
	return s
}

// line waits for the next stderr line that matches re, and returns its
// submatches.
func (s *sim) line(re *regexp.Regexp) []string {
	s.t.Helper()
	timeout := time.After(hang)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.t.Fatalf("stderr ended before a line matching %s", re)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			s.t.Fatalf("no stderr line matching %s", re)
		}
	}
}

// call makes an HTTP call and decodes the JSON answer into answer.
func (s *sim) call(method, path, body string, auth bool, answer any) int {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if auth {
		req.SetBasicAuth("key-1", "secret-1")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(answer); err != nil {
		s.t.Fatalf("%s %s: decoding the answer: %v", method, path, err)
	}
	return resp.StatusCode
}

type sendAnswer struct {
	RequestID string `json:"request_id"`
}

type verifyAnswer struct {
	IsVerified bool `json:"is_verified"`
}

func TestRunStory(t *testing.T) {
	s := start(t, "-api-key", "key-1", "-api-secret", "secret-1", "-max-attempts", "2")
	const phone, other = "+12025550163", "+37060000001"
	sendBody := func(phone string) string { return fmt.Sprintf(`{"phone_number": %q}`, phone) }
	verifyBody := func(id, code string) string {
		return fmt.Sprintf(`{"request_id": %q, "received_code": %q}`, id, code)
	}
	logged := func(channel, phone, rest string) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`^\d\d:\d\d:\d\d  %-4s  %s  code (\d{4})  request %s`, channel, regexp.QuoteMeta(phone), rest))
	}

	var rejected map[string]any
	if got := s.call(http.MethodPost, "/fraud/send-sms", sendBody(phone), false, &rejected); got != http.StatusUnauthorized {
		t.Errorf("send-sms without auth = %d %v, want 401", got, rejected)
	}

	var sent sendAnswer
	if got := s.call(http.MethodPost, "/fraud/send-sms", sendBody(phone), true, &sent); got != http.StatusOK {
		t.Fatalf("send-sms = %d, want 200", got)
	}
	m := s.line(logged("sms", phone, sent.RequestID+`  "iDenfy code: (\d{4})\. Valid for 5 minutes\."$`))
	code := m[1]
	if m[2] != code {
		t.Errorf("logged SMS text has code %s, want %s", m[2], code)
	}

	var outbox []map[string]any
	s.call(http.MethodGet, "/_sim/outbox?phone_number="+phone, "", false, &outbox) // "+" as curl sends it
	if len(outbox) != 1 || outbox[0]["code"] != code || outbox[0]["channel"] != "sms" {
		t.Errorf("outbox = %v, want the SMS with code %s", outbox, code)
	}

	// A second request uses up its attempts: -max-attempts 2.
	var spent sendAnswer
	s.call(http.MethodPost, "/fraud/send-sms", sendBody(other), true, &spent)
	spentCode := s.line(logged("sms", other, ""))[1]
	n, _ := strconv.Atoi(spentCode)
	wrong := fmt.Sprintf("%04d", (n+1)%10000)
	var v verifyAnswer
	for range 2 {
		s.call(http.MethodPost, "/fraud/verify-sms", verifyBody(spent.RequestID, wrong), true, &v)
	}
	if s.call(http.MethodPost, "/fraud/verify-sms", verifyBody(spent.RequestID, spentCode), true, &v); v.IsVerified {
		t.Errorf("verify(right code) after 2 wrong with -max-attempts 2 = true, want false")
	}

	var clock struct {
		Now time.Time `json:"now"`
	}
	before := time.Now()
	if got := s.call(http.MethodPost, "/_sim/clock", `{"advance": "2m"}`, false, &clock); got != http.StatusOK || clock.Now.Before(before.Add(2*time.Minute)) {
		t.Errorf("advance 2m = %d, now %v; want 200 and no earlier than %v", got, clock.Now, before.Add(2*time.Minute))
	}
	if got := s.line(logged("call", phone, sent.RequestID+`  "Your iDenfy verification code is `))[1]; got != code {
		t.Errorf("logged call has code %s, want %s", got, code)
	}

	if s.call(http.MethodPost, "/fraud/verify-sms", verifyBody(sent.RequestID, code), true, &v); !v.IsVerified {
		t.Errorf("verify(code read by the call) = false, want true")
	}

	var stats map[string]int
	s.call(http.MethodGet, "/_sim/stats", "", false, &stats)
	if stats["send_sms"] != 3 || stats["verify_sms"] != 4 {
		t.Errorf("stats = %v, want 3 send_sms and 4 verify_sms", stats)
	}

	if err := s.stop(); err != nil {
		t.Errorf("run after its context ended = %v, want nil", err)
	}
	s.line(regexp.MustCompile(`^idenfy-sim stopped$`))
}

func TestRunArguments(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want error // nil: any error
	}{
		{"help", []string{"-h"}, flag.ErrHelp},
		{"unknown flag", []string{"-port", "8089"}, errUsage},
		{"not a number", []string{"-max-attempts", "three"}, errUsage},
		{"positional argument", []string{"serve"}, errUsage},
		{"max-attempts 0", []string{"-max-attempts", "0"}, nil},
		{"empty api key", []string{"-api-key", ""}, nil},
		{"empty api secret", []string{"-api-secret", ""}, nil},
		{"bad address", []string{"-addr", "127.0.0.1:http-alt-nope"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel() // should run get past the arguments, it returns at once
			err := run(ctx, tt.args, io.Discard)
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("run(%q) = %v, want %v", tt.args, err, tt.want)
			}
		})
	}
}
