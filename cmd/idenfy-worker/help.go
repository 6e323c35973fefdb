package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
)

// commands are idenfy-worker's subcommands, for help and its tests.
var commands = []struct{ name, summary string }{
	{"", "run the worker, configured by the environment below"},
	{"sandbox", "embedded NATS, the iDenfy simulator and the worker in one process, to try it by hand"},
	{"demo", "the sandbox plus a scripted story; exits 0 only if every step behaved"},
	{"check-config", "check the environment without connecting anywhere: every problem at once, exit 2 if any"},
	{"healthcheck", "GET /readyz of the worker on this host (METRICS_ADDR): exit 0 when ready, 1 if not"},
	{"version", "print the version, the Go version and the VCS revision"},
	{"help", "print this help"},
}

// writeHelp prints the commands and every variable of envVars with its
// default and meaning.
func writeHelp(out io.Writer) {
	fmt.Fprintln(out, "usage: idenfy-worker [command] [-h]")
	fmt.Fprintln(out, "\nidenfy-worker verifies phone numbers through iDenfy for services on NATS.")
	fmt.Fprintln(out, "\nCommands:")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, c := range commands {
		name := c.name
		if name == "" {
			name = "(none)"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", name, c.summary)
	}
	_ = tw.Flush()
	fmt.Fprintln(out, "\nEnvironment (a bad value stops start-up with exit 2; check-config checks them):")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  variable\tdefault\tmeaning")
	for _, v := range envVars {
		def := v.def
		if def == "" {
			def = v.unset
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", v.name, def, v.meaning)
	}
	_ = tw.Flush()
	fmt.Fprintln(out, "\nREADME.md, section Configuration, says more of each.")
}

// parseFlags parses a subcommand's args into fs. Asked for help (-h), it
// prints the usage on stdout and reports done with no error; a bad flag or
// argument is a usage error (exit 2), with the usage on stderr.
func parseFlags(fs *flag.FlagSet, summary string, args []string, stdout, stderr io.Writer) (done bool, err error) {
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	fs.Usage = func() {
		fmt.Fprintf(&buf, "usage: idenfy-worker %s [flags]\n\n%s\n", fs.Name(), summary)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(&buf, "\nflags:")
			fs.PrintDefaults()
		}
	}
	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, _ = buf.WriteTo(stdout)
		return true, nil
	case err != nil:
		_, _ = buf.WriteTo(stderr)
		return true, fmt.Errorf("%w (%s: %v)", errUsage, fs.Name(), err)
	case fs.NArg() > 0:
		return true, fmt.Errorf("%w (%s: unexpected argument %q)", errUsage, fs.Name(), fs.Arg(0))
	}
	return false, nil
}

// summary is a command's line of help.
func summary(name string) string {
	for _, c := range commands {
		if c.name == name {
			return c.summary
		}
	}
	return ""
}
