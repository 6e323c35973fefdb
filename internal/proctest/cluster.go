//go:build unix

package proctest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterLimit bounds the waits for a cluster, or a node of it, to serve.
const clusterLimit = 60 * time.Second

// A Cluster is a NATS cluster of nats-server processes with JetStream.
type Cluster struct {
	Nodes []*Node
}

// A Node is one server of a Cluster. Its ports and store stay the same
// across Kill and Restart, as a server's do when its machine comes back.
type Node struct {
	*Process
	Name        string
	Port        int // clients
	ClusterPort int // routes
	MonitorPort int // /healthz
	StoreDir    string
}

// URL is the node's client URL.
func (n *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Healthy reports whether the node's /healthz says it serves, JetStream
// included: a restarted node is healthy once it has caught up with the
// meta leader and its streams.
func (n *Node) Healthy() bool {
	resp, err := healthClient.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.MonitorPort))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

var healthClient = &http.Client{Timeout: 2 * time.Second}

// WaitHealthy waits until the node is Healthy.
func (n *Node) WaitHealthy(tb testing.TB) {
	tb.Helper()
	WaitFor(tb, clusterLimit, n.Name+" to be healthy", n.Healthy)
}

// StartCluster starts n nats-server processes (n1, n2, ...) routed into
// one cluster, each with JetStream in a directory of its own, and waits
// until every node is healthy and JetStream answers through a connection
// to the cluster.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	bin := NATSServerBinary(tb)
	ports := FreePorts(tb, 3*n)
	c := &Cluster{Nodes: make([]*Node, n)}
	routes := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[n+i])
	}
	dir := tb.TempDir()
	for i := range n {
		node := &Node{
			Name:        fmt.Sprintf("n%d", i+1),
			Port:        ports[i],
			ClusterPort: ports[n+i],
			MonitorPort: ports[2*n+i],
		}
		node.StoreDir = filepath.Join(dir, node.Name)
		conf := filepath.Join(dir, node.Name+".conf")
		if err := os.WriteFile(conf, []byte(node.config(routes)), 0o600); err != nil {
			tb.Fatal(err)
		}
		node.Process = Start(tb, Command{Name: "nats-server-" + node.Name, Path: bin, Args: []string{"-c", conf}})
		c.Nodes[i] = node
	}
	for _, node := range c.Nodes {
		node.WaitHealthy(tb)
	}
	c.WaitJetStream(tb)
	return c
}

// config is the node's configuration file. Writes are not synced on every
// message: a process killed -9 leaves the page cache to the kernel, so
// only a lost machine would need that.
func (n *Node) config(routes []string) string {
	return fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
}
cluster {
  name: proctest
  listen: 127.0.0.1:%d
  routes: [
    %s
  ]
}
`, n.Name, n.Port, n.MonitorPort, n.StoreDir, n.ClusterPort, strings.Join(routes, "\n    "))
}

// URLs is every node's client URL, comma-separated, as NATS_URL takes them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL()
	}
	return strings.Join(urls, ",")
}

// Node is the node named name, nil when there is none.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// WaitJetStream waits until JetStream answers an account info request
// through a connection to the whole cluster: it has a meta leader.
func (c *Cluster) WaitJetStream(tb testing.TB) {
	tb.Helper()
	nc, err := nats.Connect(c.URLs(), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		tb.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	WaitFor(tb, clusterLimit, "JetStream to have a meta leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
}
