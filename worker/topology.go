package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Settings of the stream and consumer the worker creates when they are
// missing. Existing ones are used as they are: an operator may have tuned
// them, and the worker reads what it needs (AckWait, MaxDeliver) from them.
const (
	jobAckWait       = 30 * time.Second
	jobMaxDeliver    = 20
	jobDedupWindow   = 2 * time.Minute
	jobMaxMsgSize    = 64 << 10
	minMaxAckPending = 1000
)

// ensureBuckets opens the outcome bucket, the fleet's bucket, and the
// limits and ranges buckets of the guard's layers that are on, creating
// them when missing.
func (w *Worker) ensureBuckets(ctx context.Context) error {
	kv, err := w.ensureBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      w.cfg.Bucket,
		Description: "idenfy-worker outcomes, claims and verify memory",
		TTL:         w.cfg.ResultTTL,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    w.cfg.Replicas,
	})
	if err != nil {
		return err
	}
	w.claims = newClaims(newBucket(w.nc, kv), w.hash, w.id, w.lease, w.cfg.RetryMaxElapsed, w.clock, w.metrics)
	fleet, err := w.ensureBucket(ctx, fleetBucketConfig(w.cfg.Bucket, w.cfg.Replicas))
	if err != nil {
		return err
	}
	w.fleet.attach(w.nc, fleet)
	if w.guard.ranges != nil {
		ranges, err := w.ensureBucket(ctx, rangesBucketConfig(w.cfg.Bucket, w.cfg.Replicas, w.cfg.PumpingGuard))
		if err != nil {
			return err
		}
		w.guard.ranges.kv = newBucket(w.nc, ranges)
	}
	if len(w.cfg.SendLimits) == 0 {
		return nil
	}
	limits, err := w.ensureBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      w.cfg.Bucket + "_limits",
		Description: "idenfy-worker per-number send counters",
		TTL:         longestWindow(w.cfg.SendLimits),
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    w.cfg.Replicas,
	})
	if err != nil {
		return err
	}
	w.guard.bucket = newBucket(w.nc, limits)
	return nil
}

func (w *Worker) ensureBucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := w.js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = w.js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = w.js.KeyValue(ctx, cfg.Bucket)
		} else if err == nil {
			w.log.Info().Str("bucket", cfg.Bucket).Str("ttl", cfg.TTL.String()).Int("replicas", cfg.Replicas).Msg("created KV bucket")
			return kv, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("worker: opening KV bucket %s: %w", cfg.Bucket, err)
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("worker: reading KV bucket %s: %w", cfg.Bucket, err)
	}
	if ttl := status.TTL(); ttl != 0 && ttl < cfg.TTL {
		w.log.Warn().Str("bucket", cfg.Bucket).Str("ttl", ttl.String()).Str("want", cfg.TTL.String()).
			Msg("existing KV bucket forgets sooner than configured; using it as it is")
	}
	return kv, nil
}

// resultsDedupWindow is how long the results stream remembers an event's
// Nats-Msg-Id: a job whose ack was lost is redelivered within its ack wait
// and republishes the same event, which the stream then keeps once.
const resultsDedupWindow = 10 * time.Minute

// ensureResults opens the results stream, creating it when missing. An
// existing one is used as it is.
func (w *Worker) ensureResults(ctx context.Context) error {
	if w.cfg.ResultsStream == ResultsStreamOff {
		return nil
	}
	stream, err := w.openStream(ctx, jetstream.StreamConfig{
		Name:        w.cfg.ResultsStream,
		Description: "idenfy-worker result events of both intakes, for observers",
		Subjects:    []string{w.subj.Results},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    w.cfg.Replicas,
		MaxAge:      w.cfg.ResultsMaxAge,
		Duplicates:  resultsDedupWindow,
	})
	if err != nil {
		return err
	}
	// Every event would find no stream to store it, and every job go back
	// until it used up its deliveries: refused at start, naming why.
	cfg := stream.CachedInfo().Config
	if !slices.Contains(cfg.Subjects, w.subj.Results) && !slices.Contains(cfg.Subjects, ">") &&
		!(slices.Contains(cfg.Subjects, w.subj.ResultsSend) && slices.Contains(cfg.Subjects, w.subj.ResultsVerify)) {
		return fmt.Errorf("worker: the existing stream %s (subjects %s) does not capture %s: name a stream that does in WORKER_RESULTS_STREAM, add the subjects to it, or set it off",
			w.cfg.ResultsStream, strings.Join(cfg.Subjects, " "), w.subj.Results)
	}
	return nil
}

// openStream opens the stream of cfg, creating it with cfg when missing.
// An existing one is used as it is: an operator may have tuned it.
func (w *Worker) openStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	stream, err := w.js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		stream, err = w.js.CreateStream(ctx, cfg)
		if err == nil {
			w.log.Info().Str("stream", cfg.Name).Strs("subjects", cfg.Subjects).Int("replicas", cfg.Replicas).
				Str("max_age", cfg.MaxAge.String()).Msg("created stream")
			return stream, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("worker: creating stream %s: %w", cfg.Name, err)
		}
		stream, err = w.js.Stream(ctx, cfg.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("worker: opening stream %s: %w", cfg.Name, err)
	}
	return stream, nil
}

// ensureJobs opens the jobs stream and its durable consumer, creating them
// when missing. created is when the stream was made: a job without a
// Nats-Msg-Id is keyed by its sequence in this stream, and a stream made
// again starts its sequences over.
func (w *Worker) ensureJobs(ctx context.Context) (cons jetstream.Consumer, created time.Time, err error) {
	if created, err = w.ensureStream(ctx); err != nil {
		return nil, created, err
	}
	cons, err = w.ensureConsumer(ctx)
	return cons, created, err
}

func (w *Worker) ensureStream(ctx context.Context) (time.Time, error) {
	stream, err := w.openStream(ctx, jetstream.StreamConfig{
		Name:        w.cfg.Stream,
		Description: "idenfy-worker durable send and verify jobs",
		Subjects:    []string{w.subj.Jobs},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    w.cfg.Replicas,
		Duplicates:  jobDedupWindow,
		MaxMsgSize:  jobMaxMsgSize,
	})
	if err != nil {
		return time.Time{}, err
	}
	cfg := stream.CachedInfo().Config
	if !slices.Contains(cfg.Subjects, w.subj.Jobs) &&
		!(slices.Contains(cfg.Subjects, w.subj.JobsSend) && slices.Contains(cfg.Subjects, w.subj.JobsVerify)) {
		w.log.Warn().Str("stream", w.cfg.Stream).Strs("subjects", cfg.Subjects).Str("want", w.subj.Jobs).
			Msg("existing stream may not capture the job subjects; using it as it is")
	}
	if cfg.Retention != jetstream.WorkQueuePolicy {
		w.log.Warn().Str("stream", w.cfg.Stream).Str("retention", cfg.Retention.String()).
			Msg("existing stream is not a work queue: acked jobs stay stored")
	}
	return stream.CachedInfo().Created, nil
}

func (w *Worker) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	cons, err := w.js.Consumer(ctx, w.cfg.Stream, w.cfg.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = w.js.CreateConsumer(ctx, w.cfg.Stream, jetstream.ConsumerConfig{
			Durable:       w.cfg.Consumer,
			Description:   "idenfy-worker job consumer, shared by every worker",
			FilterSubject: w.subj.Jobs,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       jobAckWait,
			MaxDeliver:    jobMaxDeliver,
			// Room for many workers at full concurrency: each pulls only what
			// its pool can take, so this bounds the cluster, not one process.
			MaxAckPending: max(minMaxAckPending, 10*w.cfg.Concurrency),
		})
		if errors.Is(err, jetstream.ErrConsumerExists) {
			cons, err = w.js.Consumer(ctx, w.cfg.Stream, w.cfg.Consumer)
		} else if err == nil {
			w.log.Info().Str("stream", w.cfg.Stream).Str("consumer", w.cfg.Consumer).Msg("created jobs consumer")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("worker: opening consumer %s on stream %s: %w", w.cfg.Consumer, w.cfg.Stream, err)
	}
	if mp := cons.CachedInfo().Config.MaxAckPending; mp > 0 && mp < w.cfg.Concurrency {
		w.log.Warn().Int("max_ack_pending", mp).Int("concurrency", w.cfg.Concurrency).
			Msg("the consumer's MaxAckPending is below this worker's concurrency: jobs will not fill the pool")
	}
	return cons, nil
}
