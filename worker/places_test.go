package worker

import (
	"context"
	"slices"
	"testing"
	"time"
)

// When every place is taken, freed places go to waiting requests first,
// then to waiting jobs, each in the order they came.
func TestPlacesGrantInteractiveFirst(t *testing.T) {
	p := newPlaces(1)
	if err := p.acquire(context.Background(), false, nil); err != nil {
		t.Fatal(err)
	}
	order := make(chan string)
	for i, w := range []struct {
		name        string
		interactive bool
	}{{"job 1", false}, {"job 2", false}, {"request 1", true}, {"request 2", true}} {
		go func() {
			if err := p.acquire(context.Background(), w.interactive, nil); err != nil {
				order <- w.name + ": " + err.Error()
				return
			}
			order <- w.name
		}()
		eventually(t, w.name+" waits", func() bool { return p.waitingCount() == i+1 })
	}
	var got []string
	for range 4 {
		p.release()
		select {
		case name := <-order:
			got = append(got, name)
		case <-time.After(10 * time.Second):
			t.Fatalf("no place granted after a release; granted so far: %v", got)
		}
	}
	if want := []string{"request 1", "request 2", "job 1", "job 2"}; !slices.Equal(got, want) {
		t.Errorf("places went to %v, want %v", got, want)
	}
}

// A waiter that gives up leaves the queue, and the next place goes to the
// one behind it; a free place is taken without waiting.
func TestPlacesWaiterThatGivesUp(t *testing.T) {
	p := newPlaces(1)
	if err := p.acquire(context.Background(), false, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error)
	go func() { gaveUp <- p.acquire(ctx, true, nil) }()
	eventually(t, "the request waits", func() bool { return p.waitingCount() == 1 })
	job := make(chan error)
	go func() { job <- p.acquire(context.Background(), false, nil) }()
	eventually(t, "the job waits", func() bool { return p.waitingCount() == 2 })
	cancel()
	if err := <-gaveUp; err != context.Canceled {
		t.Fatalf("acquire after its context ended = %v, want %v", err, context.Canceled)
	}
	p.release()
	if err := <-job; err != nil {
		t.Fatalf("acquire of the job = %v, want the freed place", err)
	}
	p.release()
	if err := p.acquire(context.Background(), true, nil); err != nil {
		t.Fatalf("acquire of a free place = %v, want nil", err)
	}
	if n := p.waitingCount(); n != 0 {
		t.Errorf("waitingCount() = %d, want 0", n)
	}
}

// waitingCount is how many callers wait for a place.
func (p *places) waitingCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiting.len()
}
