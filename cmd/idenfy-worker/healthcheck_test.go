package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestReadyzURL(t *testing.T) {
	tests := []struct {
		addr, want string
		wantErr    bool
	}{
		{addr: ":9464", want: "http://127.0.0.1:9464/readyz"},
		{addr: "0.0.0.0:9465", want: "http://127.0.0.1:9465/readyz"},
		{addr: "[::]:9464", want: "http://127.0.0.1:9464/readyz"},
		{addr: "127.0.0.2:9464", want: "http://127.0.0.2:9464/readyz"},
		{addr: "[::1]:9464", want: "http://[::1]:9464/readyz"},
		{addr: "", wantErr: true},
		{addr: "nonsense", wantErr: true},
	}
	for _, tt := range tests {
		got, err := readyzURL(tt.addr)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("readyzURL(%q) = %q, %v; want %q, error %v", tt.addr, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestRunHealthcheck asks a stand-in for the worker's /readyz: exit 0 while
// it answers 200, 1 with its reason otherwise.
func TestRunHealthcheck(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(rw, r)
			return
		}
		if !ready.Load() {
			http.Error(rw, "not ready: cannot connect to NATS", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ready")
	}))
	defer srv.Close()
	env := map[string]string{"METRICS_ADDR": strings.TrimPrefix(srv.URL, "http://")}

	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"healthcheck"}, &out, &errOut, env)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "cannot connect to NATS") {
		t.Errorf("run(healthcheck) while not ready = %v (exit %d), want exit 1 with the reason", err, exitCode(err))
	}
	ready.Store(true)
	out.Reset()
	if err := run(t.Context(), []string{"healthcheck"}, &out, &errOut, env); err != nil || strings.TrimSpace(out.String()) != "ready" {
		t.Errorf("run(healthcheck) when ready = %v, printed %q; want nil, ready", err, out.String())
	}
	if err := run(t.Context(), []string{"healthcheck"}, &out, &errOut, map[string]string{"METRICS_ADDR": ""}); err == nil || exitCode(err) != 1 {
		t.Errorf("run(healthcheck) with METRICS_ADDR empty = %v, want exit 1", err)
	}
}
