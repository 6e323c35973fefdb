//go:build unix

package proctest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/idenfy-worker/idenfy-worker/internal/proctest"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// A process is killed, restarted with its log kept, and stopped; what it
// started in its group dies with it.
func TestProcessLifecycle(t *testing.T) {
	p := proctest.Start(t, proctest.Command{
		Name: "sh",
		Path: "/bin/sh",
		// The trap makes SIGTERM an exit 0; sleep in the background is the
		// child that must go with the group.
		Args: []string{"-c", `trap 'exit 0' TERM; echo "hello $GREETING"; sleep 60 & wait`},
		Env:  []string{"GREETING=world"},
	})
	proctest.WaitFor(t, 10*time.Second, "the greeting", func() bool { return strings.Contains(p.Log(), "hello world") })
	p.Kill()
	if p.Running() {
		t.Fatal("Running() = true after Kill, want false")
	}
	p.Restart()
	proctest.WaitFor(t, 10*time.Second, "the second greeting", func() bool { return strings.Count(p.Log(), "hello world") == 2 })
	if err := p.Stop(10 * time.Second); err != nil {
		t.Errorf("Stop() = %v, want nil (the trap exits 0)", err)
	}
	if got := strings.Count(p.Log(), "--- proctest: sh started"); got != 2 {
		t.Errorf("log holds %d start lines, want 2:\n%s", got, p.Log())
	}
}

// A node of a three-node cluster killed -9 comes back on its ports and
// store, and the cluster serves JetStream throughout.
func TestClusterNodeRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and runs a three-node cluster")
	}
	c := proctest.StartCluster(t, 3)
	n := c.Nodes[1]
	n.Kill()
	if n.Healthy() {
		t.Fatalf("%s is healthy after Kill", n.Name)
	}
	c.WaitJetStream(t)
	n.Restart()
	n.WaitHealthy(t)
	if got := c.Node(n.Name); got != n {
		t.Errorf("Node(%q) = %v, want %v", n.Name, got, n)
	}
}
