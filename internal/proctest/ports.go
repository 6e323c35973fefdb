//go:build unix

package proctest

import (
	"net"
	"testing"
)

// FreePorts returns n 127.0.0.1 ports that were free a moment ago, all
// different. A process that must be restarted on its ports, or whose peers
// name its ports before it starts (cluster routes), cannot have them
// chosen by the system at listen time.
func FreePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		defer ln.Close() // held until all are picked: no port twice
	}
	return ports
}
