package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestHelpListsEveryVariable checks that help prints every command and
// every variable of the table with its default, however it is asked for.
func TestHelpListsEveryVariable(t *testing.T) {
	for _, arg := range []string{"help", "-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(t.Context(), []string{arg}, &out, &errOut, nil); err != nil {
				t.Fatalf("run(%q) = %v, want nil", arg, err)
			}
			help := out.String()
			for _, c := range commands {
				if c.name != "" && !strings.Contains(help, "  "+c.name+" ") {
					t.Errorf("run(%q) does not list the command %s:\n%s", arg, c.name, help)
				}
			}
			for _, v := range envVars {
				def := v.def
				if def == "" {
					def = v.unset
				}
				line := ""
				for _, l := range strings.Split(help, "\n") {
					if f := strings.Fields(l); len(f) > 0 && f[0] == v.name {
						line = l
					}
				}
				if line == "" || def == "" || v.meaning == "" || !strings.Contains(line, def) || !strings.Contains(line, v.meaning) {
					t.Errorf("run(%q): the line of %s is %q, want its default %q and meaning %q", arg, v.name, line, def, v.meaning)
				}
			}
		})
	}
}

// TestSubcommandHelp checks that every command answers -h and --help with
// its usage on stdout and exit 0.
func TestSubcommandHelp(t *testing.T) {
	for _, c := range commands {
		if c.name == "" {
			continue
		}
		for _, flag := range []string{"-h", "--help"} {
			t.Run(c.name+" "+flag, func(t *testing.T) {
				var out, errOut bytes.Buffer
				err := run(t.Context(), []string{c.name, flag}, &out, &errOut, nil)
				if err != nil {
					t.Fatalf("run(%s %s) = %v, want nil (exit 0)", c.name, flag, err)
				}
				if want := "usage: idenfy-worker"; !strings.Contains(out.String(), want) {
					t.Errorf("run(%s %s) printed %q on stdout, want %q", c.name, flag, out.String(), want)
				}
				if errOut.Len() != 0 {
					t.Errorf("run(%s %s) printed %q on stderr, want nothing", c.name, flag, errOut.String())
				}
			})
		}
	}
}

func TestBadCommandLinesExit2(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // in the error
	}{
		{"unknown command", []string{"serve"}, []string{`"serve"`}},
		{"unknown flag", []string{"check-config", "-x"}, []string{"check-config", "-x"}},
		{"stray argument", []string{"version", "now"}, []string{`"now"`}},
		{"sandbox, every bad flag", []string{"sandbox", "-log-level", "loud", "-send-limits", "3"}, []string{"-log-level", "-send-limits"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), tt.args, &out, &errOut, nil)
			if !errors.Is(err, errUsage) || exitCode(err) != 2 {
				t.Fatalf("run(%q) = %v (exit %d), want a usage error (exit 2)", tt.args, err, exitCode(err))
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("run(%q) = %q, want it to say %s", tt.args, err, w)
				}
			}
		})
	}
}
