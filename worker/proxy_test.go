package worker_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
)

// upstreamProxy stands between a worker and the simulator (withBaseURL) and
// watches the vendor calls: how many are in flight at once, and, while its
// gate is held, it keeps each call waiting until the test releases it. That
// shows overlap and bounds without measuring time. intercept can answer a
// call itself or act before it is forwarded.
//
// It forwards over HTTP/1.1 and turns an upstream failure into a 502, so the
// simulator's dropped connections are to be tested without it.
type upstreamProxy struct {
	URL string

	mu          sync.Mutex
	target      *url.URL
	inFlight    int
	maxInFlight int
	arrived     int
	gate        chan struct{} // nil when open; closed to release the held calls
	intercept   func(n int, w http.ResponseWriter, r *http.Request) (answered bool)
}

// newUpstreamProxy starts a proxy; through(p) gives it the simulator to
// forward to.
func newUpstreamProxy(t testing.TB) *upstreamProxy {
	t.Helper()
	p := &upstreamProxy{}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 100
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			p.mu.Lock()
			target := p.target
			p.mu.Unlock()
			r.SetURL(target)
		},
		Transport: transport,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, gate, intercept := p.enter()
		defer p.leave()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		if intercept != nil && intercept(n, w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	p.URL = srv.URL
	t.Cleanup(func() {
		p.release()
		srv.Close()
		transport.CloseIdleConnections()
	})
	return p
}

func (p *upstreamProxy) enter() (int, chan struct{}, func(int, http.ResponseWriter, *http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.arrived++
	p.inFlight++
	p.maxInFlight = max(p.maxInFlight, p.inFlight)
	return p.arrived, p.gate, p.intercept
}

func (p *upstreamProxy) leave() {
	p.mu.Lock()
	p.inFlight--
	p.mu.Unlock()
}

// hold makes the calls arriving from now on wait until release.
func (p *upstreamProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

// release lets the held calls through and opens the gate.
func (p *upstreamProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

// setIntercept installs f, called with the 1-based number of each call
// before it is forwarded; f returns true when it answered the call itself.
func (p *upstreamProxy) setIntercept(f func(n int, w http.ResponseWriter, r *http.Request) bool) {
	p.mu.Lock()
	p.intercept = f
	p.mu.Unlock()
}

// arrivals returns how many calls arrived so far.
func (p *upstreamProxy) arrivals() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.arrived
}

// counts returns the calls in flight now and the most ever in flight at once.
func (p *upstreamProxy) counts() (now, most int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inFlight, p.maxInFlight
}

// through routes a harness's worker through p to the harness's simulator.
func through(t testing.TB, p *upstreamProxy) harnessOption {
	return withBaseURL(func(simURL string) string {
		u, err := url.Parse(simURL)
		if err != nil {
			t.Fatal(err)
		}
		p.mu.Lock()
		p.target = u
		p.mu.Unlock()
		return p.URL
	})
}
