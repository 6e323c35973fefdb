package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/idenfy-worker/idenfy-worker/worker"
)

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	if done, err := parseFlags(fs, summary("version"), args, stdout, stderr); done {
		return err
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprint(stdout, versionText(bi))
	return nil
}

// versionText describes the build: what a bug report needs to name the
// exact code. bi may be nil.
func versionText(bi *debug.BuildInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "idenfy-worker %s\n", worker.Version)
	goVersion := runtime.Version()
	if bi == nil {
		fmt.Fprintf(&b, "module  unknown (no build information)\n")
	} else {
		fmt.Fprintf(&b, "module  %s %s\n", bi.Main.Path, bi.Main.Version)
		goVersion = bi.GoVersion
	}
	fmt.Fprintf(&b, "go      %s %s/%s\n", goVersion, runtime.GOOS, runtime.GOARCH)
	vcs := map[string]string{}
	if bi != nil {
		for _, s := range bi.Settings {
			vcs[s.Key] = s.Value
		}
	}
	if vcs["vcs"] == "" {
		fmt.Fprintln(&b, "vcs     none stamped (go run, go test or -buildvcs=false)")
		return b.String()
	}
	modified := ""
	if vcs["vcs.modified"] == "true" {
		modified = " (modified: built with uncommitted changes)"
	}
	fmt.Fprintf(&b, "vcs     %s revision %s, time %s%s\n", vcs["vcs"], vcs["vcs.revision"], vcs["vcs.time"], modified)
	return b.String()
}
