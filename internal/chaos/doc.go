// Package chaos holds tests that run the worker fleet and its NATS
// cluster as real processes, then break them: kill -9 a server and a
// worker in the middle of a batch, restart them, and check that every job
// still ends with exactly one outcome. The package has no code of its own;
// its tests build the binaries with internal/proctest.
package chaos
