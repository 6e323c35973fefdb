package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// runDemo starts a sandbox on random ports and plays a scripted story
// against it, the way a signup service would use the worker. It prints each
// step and fails on the first one that does not behave.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	verbose := fs.Bool("v", false, "show the worker's logs")
	if done, err := parseFlags(fs, summary("demo"), args, stdout, stderr); done {
		return err
	}
	opts := sandboxOptions{natsPort: -1, simAddr: "127.0.0.1:0", logLevel: zerolog.WarnLevel, sendLimits: worker.DefaultSendLimits}
	if *verbose {
		opts.logs, opts.logLevel = stderr, zerolog.InfoLevel
	}
	fmt.Fprintln(stdout, "Starting the sandbox: embedded NATS with JetStream, the iDenfy simulator, the worker.")
	sb, err := startSandbox(opts)
	if err != nil {
		return err
	}
	defer sb.Close()
	nc, err := sb.natsConnect()
	if err != nil {
		return err
	}
	defer nc.Close()

	d := &demo{ctx: ctx, out: stdout, sb: sb, nc: nc, subj: messages.NewSubjects(messages.DefaultPrefix)}
	if d.js, err = jetstream.New(nc); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "NATS %s, simulator %s\n\n", sb.natsURL, sb.simURL)
	for _, step := range d.steps() {
		d.n++
		fmt.Fprintf(stdout, "%2d. %s\n", d.n, step.title)
		if err := step.run(); err != nil {
			fmt.Fprintf(stdout, "    FAILED: %v\n", err)
			return fmt.Errorf("demo step %d (%s) failed: %w", d.n, step.title, err)
		}
	}
	fmt.Fprintln(stdout, "\nEvery step behaved.")
	return sb.Close()
}

type demo struct {
	ctx  context.Context
	out  io.Writer
	sb   *sandbox
	nc   *nats.Conn
	js   jetstream.JetStream
	subj messages.Subjects
	n    int

	phone     string
	requestID string
	code      string
}

type demoStep struct {
	title string
	run   func() error
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "    "+format+"\n", args...)
}

func (d *demo) steps() []demoStep {
	return []demoStep{
		{"A signup service asks for a code to be texted (request/reply on " + d.subj.Send + ")", d.send},
		{"The user reads the SMS (the simulator's outbox)", d.readSMS},
		{"The user types a wrong code: rejected", d.wrongCode},
		{"The user types the right code: verified", d.rightCode},
		{"The same verify asked again stays verified, without calling iDenfy", d.verifyAgain},
		{"A malformed number is refused at once with its error code", d.invalidNumber},
		{"Nobody answers the SMS: the voice-call fallback, on a fast-forwarded clock", d.voiceFallback},
		{"A durable job: publish on " + d.subj.JobsSend + ", read the result on " + d.subj.ResultsSend, d.job},
		{"The same job published twice texts the user once", d.duplicateJob},
		{"A number past its send limit (3 per 10 minutes) is refused", d.sendLimit},
	}
}

func (d *demo) request(subject string, payload any, hdr nats.Header) (*nats.Msg, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
	defer cancel()
	return d.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: subject, Data: data, Header: hdr})
}

func (d *demo) sendTo(phone string, hdr nats.Header) (messages.SendResult, error) {
	var res messages.SendResult
	msg, err := d.request(d.subj.Send, messages.SendRequest{PhoneNumber: phone, CorrelationID: "demo-" + fmt.Sprint(d.n)}, hdr)
	if err != nil {
		return res, err
	}
	return res, json.Unmarshal(msg.Data, &res)
}

func (d *demo) verify(requestID, code string) (messages.VerifyResult, error) {
	var res messages.VerifyResult
	msg, err := d.request(d.subj.Verify, messages.VerifyRequest{RequestID: requestID, ReceivedCode: code, CorrelationID: "demo-" + fmt.Sprint(d.n)}, nil)
	if err != nil {
		return res, err
	}
	return res, json.Unmarshal(msg.Data, &res)
}

func (d *demo) send() error {
	d.phone = "+12025550163"
	res, err := d.sendTo(d.phone, nil)
	if err != nil {
		return err
	}
	if res.Status != messages.StatusSent || res.RequestID == "" {
		return fmt.Errorf("got %+v, want status sent with a request_id", res)
	}
	d.requestID = res.RequestID
	d.say("-> status %s, request_id %s, attempts %d", res.Status, res.RequestID, res.Attempts)
	return nil
}

func (d *demo) readSMS() error {
	out := d.sb.sim.Outbox(d.phone)
	if len(out) != 1 || out[0].Channel != "sms" {
		return fmt.Errorf("outbox of %s has %d deliveries, want 1 SMS", messages.MaskPhone(d.phone), len(out))
	}
	d.code = out[0].Code
	d.say("SMS to %s: %q", d.phone, out[0].Text)
	return nil
}

func (d *demo) wrongCode() error {
	wrong := fmt.Sprintf("%04d", (atoi(d.code)+1)%10000)
	res, err := d.verify(d.requestID, wrong)
	if err != nil {
		return err
	}
	if res.Status != messages.StatusRejected || res.IsVerified {
		return fmt.Errorf("got %+v, want status rejected", res)
	}
	d.say("-> status %s, is_verified %v", res.Status, res.IsVerified)
	return nil
}

func (d *demo) rightCode() error {
	res, err := d.verify(d.requestID, d.code)
	if err != nil {
		return err
	}
	if res.Status != messages.StatusVerified || !res.IsVerified {
		return fmt.Errorf("got %+v, want status verified", res)
	}
	d.say("-> status %s, is_verified %v, attempts %d", res.Status, res.IsVerified, res.Attempts)
	return nil
}

func (d *demo) verifyAgain() error {
	before := d.sb.sim.Stats().VerifySMS
	res, err := d.verify(d.requestID, d.code)
	if err != nil {
		return err
	}
	calls := d.sb.sim.Stats().VerifySMS - before
	if res.Status != messages.StatusVerified || calls != 0 {
		return fmt.Errorf("got %+v after %d iDenfy calls, want verified after none", res, calls)
	}
	d.say("-> status %s, attempts %d, iDenfy calls %d (iDenfy itself would now answer false)", res.Status, res.Attempts, calls)
	return nil
}

func (d *demo) invalidNumber() error {
	msg, err := d.request(d.subj.Send, map[string]string{"phone_number": "202-555-0163"}, nil)
	if err != nil {
		return err
	}
	var res messages.SendResult
	if err := json.Unmarshal(msg.Data, &res); err != nil {
		return err
	}
	if res.Error == nil || res.Error.Code != messages.CodeInvalidPhoneNumber {
		return fmt.Errorf("got %+v, want error invalid_phone_number", res)
	}
	if msg.Header.Get(micro.ErrorCodeHeader) == "" {
		return errors.New("the answer lacks the Nats-Service-Error-Code header")
	}
	d.say("-> %s: %s (Nats-Service-Error-Code %s)", res.Error.Code, res.Error.Message, msg.Header.Get(micro.ErrorCodeHeader))
	return nil
}

func (d *demo) voiceFallback() error {
	phone := "+447700900123"
	res, err := d.sendTo(phone, nil)
	if err != nil {
		return err
	}
	if res.Status != messages.StatusSent {
		return fmt.Errorf("send got %+v", res)
	}
	d.sb.sim.Advance(2 * time.Minute)
	out := d.sb.sim.Outbox(phone)
	if len(out) != 2 || out[1].Channel != "call" || out[1].Code != out[0].Code {
		return fmt.Errorf("after 2 minutes the outbox holds %d deliveries, want the SMS and a call with the same code", len(out))
	}
	d.say("+2m: a call reads the same code: %q", out[1].Text)
	d.sb.sim.Advance(3 * time.Minute)
	out = d.sb.sim.Outbox(phone)
	if len(out) != 3 || out[2].Channel != "call" || out[2].Code == out[0].Code {
		return fmt.Errorf("after 5 minutes the outbox holds %d deliveries, want a second call with a new code", len(out))
	}
	d.say("+5m: a second call with a new code: %q", out[2].Text)
	v, err := d.verify(res.RequestID, out[2].Code)
	if err != nil {
		return err
	}
	if v.Status != messages.StatusVerified {
		return fmt.Errorf("verifying the second code got %+v", v)
	}
	d.say("-> the second code verifies: status %s", v.Status)
	return nil
}

// job publishes a durable job and reads its result from the results subject.
func (d *demo) job() error {
	results, err := d.nc.SubscribeSync(d.subj.ResultsSend)
	if err != nil {
		return err
	}
	defer results.Unsubscribe()
	phone := "+37060012345"
	ack, err := d.publishJob(phone, "demo-job-1", "signup-job-1")
	if err != nil {
		return err
	}
	d.say("published, stream %s sequence %d", ack.Stream, ack.Sequence)
	res, err := d.awaitResult(results, "signup-job-1")
	if err != nil {
		return err
	}
	if res.Status != messages.StatusSent {
		return fmt.Errorf("got %+v, want sent", res)
	}
	d.say("-> result on %s: status %s, request_id %s", d.subj.ResultsSend, res.Status, res.RequestID)
	return nil
}

// duplicateJob publishes the job of the previous step again with the same
// Nats-Msg-Id: JetStream drops it within its dedup window, and beyond it the
// worker answers from its store. The same key asked over request/reply is
// answered from the store too. The outbox still holds one SMS.
func (d *demo) duplicateJob() error {
	phone := "+37060012345"
	ack, err := d.publishJob(phone, "demo-job-1", "signup-job-1")
	if err != nil {
		return err
	}
	if !ack.Duplicate {
		return errors.New("JetStream did not flag the second publish as a duplicate")
	}
	d.say("JetStream flags the second publish as a duplicate (its dedup window)")
	before := d.sb.sim.Stats().SendSMS
	res, err := d.sendTo(phone, nats.Header{messages.HeaderMsgID: []string{"demo-job-1"}})
	if err != nil {
		return err
	}
	if res.Status != messages.StatusSent {
		return fmt.Errorf("the same key over request/reply got %+v", res)
	}
	calls := d.sb.sim.Stats().SendSMS - before
	sms := len(d.sb.sim.Outbox(phone))
	if calls != 0 || sms != 1 {
		return fmt.Errorf("iDenfy got %d more sends and the outbox holds %d SMS, want 0 and 1", calls, sms)
	}
	d.say("the same Nats-Msg-Id over request/reply: answered from the store (request_id %s), iDenfy calls %d, SMS in the outbox %d", res.RequestID, calls, sms)
	return nil
}

func (d *demo) sendLimit() error {
	phone := "+12025550199"
	for i := 1; i <= 3; i++ {
		res, err := d.sendTo(phone, nil)
		if err != nil {
			return err
		}
		if res.Status != messages.StatusSent {
			return fmt.Errorf("send %d got %+v, want sent", i, res)
		}
	}
	d.say("3 sends to %s: sent", messages.MaskPhone(phone))
	res, err := d.sendTo(phone, nil)
	if err != nil {
		return err
	}
	if res.Error == nil || res.Error.Code != messages.CodeTooManySends {
		return fmt.Errorf("the 4th send got %+v, want too_many_sends", res)
	}
	d.say("-> 4th send: %s: %s", res.Error.Code, res.Error.Message)
	return nil
}

func (d *demo) publishJob(phone, msgID, correlationID string) (*jetstream.PubAck, error) {
	data, err := json.Marshal(messages.SendRequest{PhoneNumber: phone, CorrelationID: correlationID})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	return d.js.Publish(ctx, d.subj.JobsSend, data, jetstream.WithMsgID(msgID))
}

func (d *demo) awaitResult(sub *nats.Subscription, correlationID string) (messages.SendResult, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return messages.SendResult{}, fmt.Errorf("no result with correlation_id %s: %w", correlationID, err)
		}
		var res messages.SendResult
		if json.Unmarshal(msg.Data, &res) == nil && res.CorrelationID == correlationID {
			return res, nil
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range strings.TrimSpace(s) {
		n = n*10 + int(c-'0')
	}
	return n
}
