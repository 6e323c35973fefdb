package idenfytest

import (
	"container/heap"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// The vendor's timeline, from the send time t0.
const (
	firstCallAfter  = 2 * time.Minute  // a call reads code A again
	secondCallAfter = 5 * time.Minute  // A expires; a call reads the new code B
	codesExpireAt   = 10 * time.Minute // B expires
)

// A request is one send-sms and the verification state of its request_id.
type request struct {
	id     string
	seq    uint64 // orders requests sent at the same instant
	phone  string
	sender string
	sentAt time.Time
	code   string // A until the second call, then B
	calls  int    // voice calls made so far
	wrong  int    // wrong codes received
	done   bool   // verified: nothing more happens
}

// A call is a voice call due at a time.
type call struct {
	at  time.Time
	req *request
}

// callQueue is a min-heap of pending calls by due time, so observing the
// clock costs only the calls that are due.
type callQueue []call

func (q callQueue) Len() int { return len(q) }
func (q callQueue) Less(i, j int) bool {
	if q[i].at.Equal(q[j].at) {
		return q[i].req.seq < q[j].req.seq
	}
	return q[i].at.Before(q[j].at)
}
func (q callQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *callQueue) Push(x any)   { *q = append(*q, x.(call)) }
func (q *callQueue) Pop() any {
	old := *q
	c := old[len(old)-1]
	old[len(old)-1] = call{}
	*q = old[:len(old)-1]
	return c
}

// send texts code A to phone and schedules the first call.
func (s *Simulator) send(phone, sender string) (requestID string) {
	s.mu.Lock()
	now := s.observeLocked()
	r := &request{
		id:     newRequestID(),
		seq:    uint64(len(s.requests)),
		phone:  phone,
		sender: sender,
		sentAt: now,
		code:   newCode(""),
	}
	s.requests[r.id] = r
	heap.Push(&s.calls, call{at: now.Add(firstCallAfter), req: r})
	s.deliverLocked(Delivery{
		PhoneNumber: phone,
		Channel:     ChannelSMS,
		Code:        r.code,
		RequestID:   r.id,
		SenderName:  sender,
		Text:        fmt.Sprintf("%s code: %s. Valid for 5 minutes.", sender, r.code),
		At:          now,
	})
	s.mu.Unlock()
	s.runHooks(true)
	return r.id
}

// callLocked makes r's next voice call, due at at, unless r was verified.
func (s *Simulator) callLocked(r *request, at time.Time) {
	if r.done {
		return
	}
	r.calls++
	if r.calls == 1 {
		heap.Push(&s.calls, call{at: r.sentAt.Add(secondCallAfter), req: r})
	} else {
		r.code = newCode(r.code)
	}
	s.deliverLocked(Delivery{
		PhoneNumber: r.phone,
		Channel:     ChannelCall,
		Code:        r.code,
		RequestID:   r.id,
		SenderName:  r.sender,
		Text:        fmt.Sprintf("Your %s verification code is %s.", r.sender, spellOut(r.code)),
		At:          at,
	})
}

// verify checks code against request id. found is false for a request_id the
// simulator never issued.
func (s *Simulator) verify(id, code string) (verified, found bool) {
	s.mu.Lock()
	now := s.observeLocked()
	r, found := s.requests[id]
	if found {
		verified = s.checkLocked(r, code, now)
	}
	s.mu.Unlock()
	s.runHooks(false)
	return verified, found
}

// checkLocked relies on observeLocked having made the due calls: from t0+5m
// on, r.code is B unless r was verified before.
func (s *Simulator) checkLocked(r *request, code string, now time.Time) bool {
	switch {
	case r.done, r.wrong >= s.maxAttempts, !now.Before(r.sentAt.Add(codesExpireAt)):
		return false
	case code == r.code:
		r.done = true
		return true
	default:
		r.wrong++
		return false
	}
}

// newRequestID returns 32 random lowercase hex digits, like the vendor's.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails; it crashes the program instead
	return hex.EncodeToString(b[:])
}

var codeSpace = big.NewInt(10000)

// newCode returns random 4 digits other than not, so code B always differs
// from A.
func newCode(not string) string {
	for {
		n, err := rand.Int(rand.Reader, codeSpace)
		if err != nil {
			panic("idenfytest: reading random code: " + err.Error())
		}
		if code := fmt.Sprintf("%04d", n); code != not {
			return code
		}
	}
}

// spellOut separates the digits the way a voice reads them: "1 2 3 4".
func spellOut(code string) string {
	return strings.Join(strings.Split(code, ""), " ")
}
