package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// runHealthcheck asks /readyz of the worker on this host, on METRICS_ADDR's
// port: the image's HEALTHCHECK, which needs no wget or curl in the image.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if done, err := parseFlags(fs, summary("healthcheck"), args, stdout, stderr); done {
		return err
	}
	addr, ok := lookup("METRICS_ADDR")
	if !ok {
		v, _ := lookupVar("METRICS_ADDR")
		addr = v.def
	}
	url, err := readyzURL(strings.TrimSpace(addr))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(io.LimitReader(resp.Body, 4096)).ReadString('\n')
	line = strings.TrimSpace(line)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, line)
	}
	fmt.Fprintln(stdout, line)
	return nil
}

// readyzURL is where the worker listening on metricsAddr answers /readyz
// on this host: 127.0.0.1 unless it listens on one address only.
func readyzURL(metricsAddr string) (string, error) {
	if metricsAddr == "" {
		return "", errors.New("METRICS_ADDR is empty: the worker serves no /readyz to ask")
	}
	host, port, err := net.SplitHostPort(metricsAddr)
	if err != nil {
		return "", fmt.Errorf("METRICS_ADDR %q is not host:port", metricsAddr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}
