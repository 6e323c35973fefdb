package main

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionText(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.1",
		Main:      debug.Module{Path: "github.com/idenfy-worker/idenfy-worker", Version: "v0.1.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "62d38eb0c0ffee"},
			{Key: "vcs.time", Value: "2026-12-01T09:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	want := "idenfy-worker 0.1.0\n" +
		"module  github.com/idenfy-worker/idenfy-worker v0.1.0\n" +
		"go      go1.26.1 " + runtime.GOOS + "/" + runtime.GOARCH + "\n" +
		"vcs     git revision 62d38eb0c0ffee, time 2026-12-01T09:00:00Z (modified: built with uncommitted changes)\n"
	if got := versionText(bi); got != want {
		t.Errorf("versionText(...) = %q, want %q", got, want)
	}
	if got := versionText(nil); !strings.Contains(got, "no build information") || !strings.Contains(got, runtime.Version()) {
		t.Errorf("versionText(nil) = %q, want it to say there is no build information, and the Go version", got)
	}
}

func TestRunVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"version"}, &out, &errOut, nil); err != nil {
		t.Fatalf("run(version) = %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	prefixes := []string{"idenfy-worker 0.1.0", "module  ", "go      go1.", "vcs     "}
	if len(lines) != len(prefixes) {
		t.Fatalf("run(version) printed %q, want %d lines", out.String(), len(prefixes))
	}
	for i, p := range prefixes {
		if !strings.HasPrefix(lines[i], p) {
			t.Errorf("run(version) line %d = %q, want it to start with %q", i+1, lines[i], p)
		}
	}
}
