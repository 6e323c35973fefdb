package main

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// runCheckConfig checks the environment as the worker would at start-up,
// without connecting anywhere: every problem is in the error (a line each,
// exit 2), unknown variables are warned of on stderr.
func runCheckConfig(args []string, stdout, stderr io.Writer, environ map[string]string) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	if done, err := parseFlags(fs, summary("check-config"), args, stdout, stderr); done {
		return err
	}
	for _, w := range unknownVars(slices.Collect(maps.Keys(environ))) {
		fmt.Fprintln(stderr, "idenfy-worker: warning:", w)
	}
	c, err := loadConfig(func(name string) (string, bool) {
		v, ok := environ[name]
		return v, ok
	})
	if err != nil {
		return err
	}
	limits := make([]string, len(c.SendLimits))
	for i, l := range c.SendLimits {
		limits[i] = l.String()
	}
	fmt.Fprintf(stdout, "configuration OK: NATS %s, iDenfy %s, subjects %s.*, stream %s, bucket %s, send limits %s, metrics %s\n",
		redactURLs(c.NATSURL), c.BaseURL, c.Prefix, c.Stream, c.Bucket, orOff(strings.Join(limits, ",")), orOff(c.MetricsAddr))
	return nil
}
