package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var readmeVarName = regexp.MustCompile("`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`")

// TestReadmeConfigurationTable checks README's Configuration table against
// the table the worker reads: every variable appears, the first column
// names no other, and a row of one variable gives its default.
func TestReadmeConfigurationTable(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var rows []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| `") {
			rows = append(rows, line)
		}
	}
	table := strings.Join(rows, "\n")
	for _, v := range envVars {
		if !strings.Contains(table, "`"+v.name+"`") {
			t.Errorf("README's configuration table does not mention %s", v.name)
		}
	}
	for _, row := range rows {
		cells := strings.Split(row, "|")
		if len(cells) < 4 {
			t.Errorf("README configuration row %q has fewer than 3 columns", row)
			continue
		}
		names := readmeVarName.FindAllStringSubmatch(cells[1], -1)
		for _, m := range names {
			if !knownVar(m[1]) {
				t.Errorf("README's configuration table lists %s, which the worker does not read", m[1])
			}
		}
		if len(names) != 1 {
			continue
		}
		v, _ := lookupVar(names[0][1])
		want := v.unset
		if v.def != "" {
			want = "`" + v.def + "`"
		}
		if got := strings.TrimSpace(cells[2]); got != want {
			t.Errorf("README gives %s the default %s, the worker %s", v.name, got, want)
		}
	}
}
