// Package worker connects NATS to iDenfy: it serves the request/reply intake
// as a NATS micro service and the durable-jobs intake as a JetStream
// consumer, runs every request through one handler core (idempotency, guard,
// the iDenfy call under exponential backoff) and publishes every outcome.
//
// A Worker is built from a Config with New, started with Start and stopped
// with Shutdown. It does not own the NATS connection or the HTTP client: the
// caller (cmd/idenfy-worker) builds both and closes them after Shutdown.
// Config.Validate checks a configuration without connecting anywhere.
//
// # Map of the package
//
// Each concern has one owner, a type or a file named after it:
//
//	config.go     Config, its defaults and Validate, Options, RateLimit and SendLimit with their parsers
//	worker.go     Worker: New, Start, Shutdown, Ready; wires the parts below
//	topology.go   the streams, consumer and buckets, created when missing
//	admission.go  admission: request slots, call places, goroutine reuse, the in-flight tracker
//	service.go    the request/reply intake (micro service), its error headers and stats
//	jobs.go       the jobs intake: pulling, answering and acking, handing back
//	jobretry.go   the job retry policy: which failed jobs go back to the stream, and after how long
//	stranded.go   jobs that used up their deliveries, answered from the claims store
//	task.go       what flows through every stage: task, outcome, routes (operation to subjects),
//	              idempotency keys and Reply-To of a message, decoding, the task's logger
//	process.go    run: one task through claims, handler, guard refund and record, under a recover
//	claims.go     claims: idempotency keys and verify turns in the outcome bucket, leases, the keeper
//	guard.go      guard: country allow-list, per-number send limits, their refunds
//	handler.go    the handler core: job age, guard, verify memory, the call, the contract result
//	retry.go      the backoff loop around one iDenfy call, and the one table from errors to codes
//	results.go    what both intakes do with an outcome: publish the result event, count it, log it
//	hash.go       the keyed hash of everything kept in JetStream
//	bucket.go     the KV fast path for compare-and-swap writes, and conflict detection
//	metrics.go    the Prometheus metrics
//	clock.go      Clock, so that tests move time instead of sleeping
//
// # How one request walks through them
//
// An intake (service.go or jobs.go) admits a message (admission.go), decodes
// it into a task (task.go) and calls run (process.go). run claims the task's
// idempotency key (claims.go): a key already done answers its stored result
// at once, a key another worker holds is waited for, or, for a job, handed
// back. The handler core (handler.go) checks the job's age and the guard
// (guard.go), takes a verify's turn (claims.go again: the verify memory),
// and calls iDenfy under the backoff policy (retry.go), holding a call place
// (admission.go) for each attempt. The outcome is judged by the job retry
// policy (jobretry.go), the guard refunds a send that reached nobody, and
// the claims store records it. The intake then answers: a request's caller
// is answered once the outcome is recorded, and results.go publishes its
// event after; a job's event is sent first, its outcome recorded while the
// results stream stores the event, and the job acked once both are stored.
//
// Where to change what: the idempotency rules are in claims.go, the guard
// in guard.go, the job retry policy in jobretry.go, the retry policy of one
// call and the mapping of errors to contract codes in retry.go.
package worker
