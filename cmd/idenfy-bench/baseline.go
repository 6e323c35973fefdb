package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/idenfy-worker/idenfy-worker/idenfy"
	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// The baselines do the same work as the worker with no policy at all: no
// validation beyond decoding, no idempotency, no guard, no backoff, no
// results events, no metrics. They run in a process of their own, started
// by the bench as `idenfy-bench baseline-responder` or `baseline-jobs`, and
// are configured by BASELINE_* variables.

// baselineConfig is read from the environment of a baseline process.
type baselineConfig struct {
	h2c         bool
	natsURL     string
	idenfyURL   string
	concurrency int
	readyAddr   string
	// durable has the jobs loop store each result in the results stream,
	// its ack awaited, before it acks the job.
	durable bool
}

func baselineFromEnv() (baselineConfig, error) {
	c := baselineConfig{
		natsURL:   os.Getenv("BASELINE_NATS_URL"),
		idenfyURL: os.Getenv("BASELINE_IDENFY_URL"),
		readyAddr: os.Getenv("BASELINE_READY_ADDR"),
		h2c:       os.Getenv("BASELINE_H2C") == "true",
		durable:   os.Getenv("BASELINE_DURABLE_RESULTS") == "true",
	}
	var err error
	if c.concurrency, err = strconv.Atoi(os.Getenv("BASELINE_CONCURRENCY")); err != nil || c.concurrency < 1 {
		return c, errors.New("BASELINE_CONCURRENCY is not a positive number")
	}
	return c, nil
}

func baselineEnv(e *env, concurrency int, readyAddr string, h2c bool) []string {
	return []string{
		fmt.Sprint("BASELINE_H2C=", h2c),
		"BASELINE_NATS_URL=" + e.natsURL,
		"BASELINE_IDENFY_URL=" + e.simURL,
		fmt.Sprint("BASELINE_CONCURRENCY=", concurrency),
		"BASELINE_READY_ADDR=" + readyAddr,
	}
}

// baselineClient is the same HTTP client the worker uses, sized the same.
func (c baselineConfig) client() (*idenfy.Client, error) {
	opts := []idenfy.Option{idenfy.WithMaxConnections(c.concurrency)}
	if c.h2c {
		opts = append(opts, idenfy.WithUnencryptedHTTP2())
	}
	return idenfy.NewClient(idenfy.Config{
		BaseURL:   c.idenfyURL,
		APIKey:    idenfytest.DefaultAPIKey,
		APISecret: idenfytest.DefaultAPISecret,
	}, opts...)
}

// baselineSetup reads the configuration and makes the HTTP client and the
// NATS connection of a baseline process.
func baselineSetup() (baselineConfig, *idenfy.Client, *nats.Conn, error) {
	c, err := baselineFromEnv()
	if err != nil {
		return c, nil, nil, err
	}
	client, err := c.client()
	if err != nil {
		return c, nil, nil, err
	}
	nc, err := nats.Connect(c.natsURL)
	return c, client, nc, err
}

// serveReady answers 200 on /readyz once the baseline serves.
func serveReady(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	go func() { _ = http.Serve(ln, mux) }()
	return nil
}

// sendOnce is the whole of a baseline's work for one message: decode, call
// iDenfy once, encode the result.
func sendOnce(ctx context.Context, client *idenfy.Client, data []byte) []byte {
	var req messages.SendRequest
	res := messages.SendResult{Status: messages.StatusFailed}
	if json.Unmarshal(data, &req) == nil {
		resp, err := client.SendSMS(ctx, idenfy.SendSMSRequest{PhoneNumber: req.PhoneNumber, SenderName: req.SenderName})
		if err == nil {
			res = messages.SendResult{Status: messages.StatusSent, RequestID: resp.RequestID, CorrelationID: req.CorrelationID, Attempts: 1}
		}
	}
	out, _ := json.Marshal(res)
	return out
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// runBaselineResponder is a minimal micro responder: the same endpoint, a
// pool of the same size, one HTTP call, a reply.
func runBaselineResponder() error {
	c, client, nc, err := baselineSetup()
	if err != nil {
		return err
	}
	defer nc.Close()
	subj := messages.NewSubjects(messages.DefaultPrefix)
	slots := make(chan struct{}, c.concurrency)
	svc, err := micro.AddService(nc, micro.Config{Name: "baseline", Version: "0.0.1", QueueGroup: messages.QueueGroup})
	if err != nil {
		return err
	}
	handler := micro.HandlerFunc(func(req micro.Request) {
		slots <- struct{}{}
		data, reply := req.Data(), req.Reply()
		go func() {
			defer func() { <-slots }()
			_ = nc.Publish(reply, sendOnce(context.Background(), client, data))
		}()
	})
	if err := svc.AddEndpoint("send", handler, micro.WithEndpointSubject(subj.Send)); err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	if err := serveReady(c.readyAddr); err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	<-ctx.Done()
	_ = svc.Stop()
	return nc.Drain()
}

// runBaselineJobs is a minimal jobs loop: pull in batches into a pool of the
// same size, one HTTP call, publish the result, ack. Durable, it stores the
// result in the results stream (made as the worker makes it) and waits for
// that before the ack.
func runBaselineJobs() error {
	c, client, nc, err := baselineSetup()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	subj := messages.NewSubjects(messages.DefaultPrefix)
	setup, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.Consumer(setup, worker.DefaultStream, worker.DefaultConsumer)
	if err != nil {
		return err
	}
	if c.durable {
		if _, err := js.CreateOrUpdateStream(setup, jetstream.StreamConfig{
			Name:      worker.DefaultResultsStream,
			Subjects:  []string{subj.Results},
			Retention: jetstream.LimitsPolicy,
			Storage:   jetstream.FileStorage,
			MaxAge:    worker.DefaultResultsMaxAge,
		}); err != nil {
			return err
		}
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(min(c.concurrency, 64)))
	if err != nil {
		return err
	}
	if err := serveReady(c.readyAddr); err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	go func() {
		<-ctx.Done()
		iter.Stop()
	}()
	slots := make(chan struct{}, c.concurrency)
	for {
		slots <- struct{}{}
		msg, err := iter.Next()
		if err != nil {
			break
		}
		go func() {
			defer func() { <-slots }()
			result := sendOnce(context.Background(), client, msg.Data())
			if !c.durable {
				_ = nc.Publish(subj.ResultsSend, result)
				_ = msg.Ack()
				return
			}
			if _, err := js.Publish(context.Background(), subj.ResultsSend, result); err != nil {
				_ = msg.Nak()
				return
			}
			_ = msg.Ack()
		}()
	}
	return nc.Drain()
}
