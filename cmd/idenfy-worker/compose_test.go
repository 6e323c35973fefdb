package main

import (
	"bufio"
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/idenfy-worker/idenfy-worker/idenfy/idenfytest"
	"github.com/idenfy-worker/idenfy-worker/messages"
	"github.com/idenfy-worker/idenfy-worker/worker"
)

// The deployment files at the root of the repository (docker-compose.yml,
// .env.example, deploy/nats-server.conf) are checked here without a Docker
// engine: compose-go, the library docker compose itself loads files with,
// reads the compose file, and the embedded NATS server reads its config.

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = "../.."

// natsConfigPath is the NATS server configuration docker-compose.yml mounts.
var natsConfigPath = filepath.Join(repoRoot, "deploy", "nats-server.conf")

// natsPasswords stand in for the passwords of the NATS users, which
// .env.example leaves empty and docker-compose.yml requires: variables of
// .env for compose, not for the worker (serverVars).
var natsPasswords = map[string]string{
	"NATS_WORKER_PASSWORD":         "w0rkerTestPassw0rd",
	"NATS_CALLER_PASSWORD":         "ca11erTestPassw0rd",
	"NATS_SANDBOX_WORKER_PASSWORD": "sandb0xW0rkerTestPassw0rd",
	"NATS_SANDBOX_CALLER_PASSWORD": "sandb0xCa11erTestPassw0rd",
}

// setNATSPasswords puts the passwords in the environment, where the NATS
// server's config reads them.
func setNATSPasswords(t *testing.T) {
	t.Helper()
	for k, v := range natsPasswords {
		t.Setenv(k, v)
	}
}

// loadCompose loads docker-compose.yml as `docker compose --profile ...`
// would, with .env.example and the NATS passwords standing in for the
// uncommitted .env: from a copy of the deployment files in a temporary
// directory. The host's environment is left out.
func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	p, err := tryLoadCompose(t, natsPasswords, profiles...)
	if err != nil {
		t.Fatalf("loading docker-compose.yml (profiles %q): %v", profiles, err)
	}
	return p
}

// tryLoadCompose loads docker-compose.yml with .env.example, plus extra
// variables, as .env.
func tryLoadCompose(t *testing.T, extra map[string]string, profiles ...string) (*types.Project, error) {
	t.Helper()
	dir := t.TempDir()
	for src, dst := range map[string]string{
		"docker-compose.yml":      "docker-compose.yml",
		".env.example":            ".env",
		"Dockerfile":              "Dockerfile",
		"deploy/nats-server.conf": "deploy/nats-server.conf",
	} {
		data, err := os.ReadFile(filepath.Join(repoRoot, src))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, dst)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if dst == ".env" {
			for _, k := range slices.Sorted(maps.Keys(extra)) {
				data = fmt.Appendf(data, "%s=%s\n", k, extra[k])
			}
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir),
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(t.Context())
}

// isWorker tells whether a service runs the worker: built from the
// repository's Dockerfile with the image's entrypoint.
func isWorker(s types.ServiceConfig) bool {
	return s.Build != nil && len(s.Entrypoint) == 0
}

func workers(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	}) {
		if s := p.Services[name]; isWorker(s) {
			out = append(out, s)
		}
	}
	return out
}

// serviceEnv is a service's environment as its container gets it: env_file
// and environment merged, environment winning.
func serviceEnv(t *testing.T, s types.ServiceConfig) map[string]string {
	t.Helper()
	env := map[string]string{}
	for k, v := range s.Environment {
		if v == nil {
			t.Errorf("service %s: %s has no value (it would come from the host's environment)", s.Name, k)
			continue
		}
		env[k] = *v
	}
	return env
}

// checkWorkerService checks what every worker service needs, and returns
// its configuration as the worker would load it.
func checkWorkerService(t *testing.T, p *types.Project, s types.ServiceConfig) config {
	t.Helper()
	env := serviceEnv(t, s)
	for name := range env {
		if _, forCompose := natsPasswords[name]; forCompose {
			// .env is the worker's env_file too; the passwords in it are the
			// server's to know.
			if env[name] != "" {
				t.Errorf("service %s is given %s: a worker should hold no password but its own, in NATS_URL", s.Name, name)
			}
			continue
		}
		if !knownVar(name) {
			t.Errorf("service %s sets %s, which the worker does not read", s.Name, name)
		}
	}
	for _, name := range []string{"IDENFY_API_KEY", "IDENFY_API_SECRET"} {
		if env[name] == "" && env[name+"_FILE"] == "" {
			t.Errorf("service %s has neither %s nor %s_FILE", s.Name, name, name)
		}
	}
	cfg, err := loadConfig(lookupFrom(env))
	if err != nil {
		t.Errorf("service %s: the worker would refuse its environment: %v", s.Name, err)
	}

	// NATS: the compose service, on the port its config listens on.
	u, err := url.Parse(cfg.NATSURL)
	if err != nil {
		t.Fatalf("service %s: NATS_URL %q: %v", s.Name, cfg.NATSURL, err)
	}
	nats, ok := p.Services[u.Hostname()]
	if !ok || !strings.HasPrefix(nats.Image, "nats:") {
		t.Errorf("service %s: NATS_URL %q does not name the nats service", s.Name, cfg.NATSURL)
	} else if opts := natsOptions(t, nats); u.Port() != strconv.Itoa(opts.Port) {
		t.Errorf("service %s: NATS_URL %q, but the server listens on %d", s.Name, cfg.NATSURL, opts.Port)
	}
	if dep, ok := s.DependsOn[u.Hostname()]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("service %s: depends_on %s = %+v, want condition %s", s.Name, u.Hostname(), dep, types.ServiceConditionHealthy)
	}
	if ok {
		checkWorkerUser(t, s.Name, natsOptions(t, nats), u, cfg)
	}

	// The health check asks /readyz on the metrics address.
	if cfg.MetricsAddr == "" {
		t.Errorf("service %s: METRICS_ADDR is empty: no /readyz to check", s.Name)
	}
	_, metricsPort, _ := net.SplitHostPort(cfg.MetricsAddr)
	probe := healthURL(t, s)
	if test := healthTest(s); probe == nil && slices.Equal(test, imageHealthcheck) {
		// The subcommand asks the address it derives from METRICS_ADDR.
		u, err := readyzURL(cfg.MetricsAddr)
		if err == nil {
			probe, _ = url.Parse(u)
		}
	}
	if probe == nil || probe.Path != "/readyz" || !isLoopbackHost(probe.Hostname()) || probe.Port() != metricsPort {
		t.Errorf("service %s: health check %v, want GET http://127.0.0.1:%s/readyz (METRICS_ADDR %q)",
			s.Name, healthTest(s), metricsPort, cfg.MetricsAddr)
	}

	// The container is built from this repository, and given time to shut
	// down gracefully.
	if ctx := s.Build.Context; ctx != p.WorkingDir {
		t.Errorf("service %s: build context %q, want the repository root %q", s.Name, ctx, p.WorkingDir)
	} else if _, err := os.Stat(filepath.Join(ctx, cmp.Or(s.Build.Dockerfile, "Dockerfile"))); err != nil {
		t.Errorf("service %s: %v", s.Name, err)
	}
	if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= cfg.Shutdown {
		t.Errorf("service %s: stop_grace_period %v, want longer than WORKER_SHUTDOWN_TIMEOUT (%v)", s.Name, s.StopGracePeriod, cfg.Shutdown)
	}
	return cfg
}

// imageHealthcheck is the health check of the image (the Dockerfile's
// HEALTHCHECK), which compose services may repeat.
var imageHealthcheck = []string{"CMD", "/usr/local/bin/idenfy-worker", "healthcheck"}

// checkWorkerUser checks that a worker connects as a user of the NATS
// config, with its password, whose permissions are a worker's for the
// worker's own subjects, stream and bucket (a sample of them: the whole
// set is held to the product by TestPermissions).
func checkWorkerUser(t *testing.T, service string, opts *server.Options, u *url.URL, cfg config) {
	t.Helper()
	password, _ := u.User.Password()
	i := slices.IndexFunc(opts.Users, func(user *server.User) bool { return user.Username == u.User.Username() })
	if i < 0 {
		t.Errorf("service %s: NATS user %q is not in the NATS config", service, u.User.Username())
		return
	}
	user := opts.Users[i]
	if user.Password != password {
		t.Errorf("service %s: the password of NATS user %q is not the one the server gets", service, user.Username)
	}
	if user.Permissions == nil || user.Permissions.Publish == nil || user.Permissions.Subscribe == nil {
		t.Fatalf("service %s: NATS user %q has no publish and subscribe permissions: it may do anything", service, user.Username)
	}
	pub, sub := user.Permissions.Publish.Allow, user.Permissions.Subscribe.Allow
	for _, want := range []string{
		cfg.Prefix + ".results.>",
		"$JS.API.STREAM.INFO." + cfg.Stream,
		"$JS.API.CONSUMER.MSG.NEXT." + cfg.Stream + "." + worker.DefaultConsumer,
		"$KV." + cfg.Bucket + ".>",
		"$KV." + cfg.Bucket + "_limits.>",
	} {
		if !slices.Contains(pub, want) {
			t.Errorf("service %s: NATS user %q may not publish to %s", service, user.Username, want)
		}
	}
	for _, want := range []string{
		workerInbox(cfg.Prefix) + ".>",
		cfg.Prefix + ".send " + messages.QueueGroup,
		cfg.Prefix + ".verify " + messages.QueueGroup,
	} {
		if !slices.Contains(sub, want) {
			t.Errorf("service %s: NATS user %q may not subscribe to %s", service, user.Username, want)
		}
	}
	if slices.Contains(pub, ">") || slices.Contains(sub, ">") {
		t.Errorf("service %s: NATS user %q may use every subject", service, user.Username)
	}
}

// workerInbox is the inbox prefix connectNATS gives a worker with prefix.
func workerInbox(prefix string) string { return "_INBOX_idenfy_worker." + prefix }

// healthTest is a service's health check command.
func healthTest(s types.ServiceConfig) []string {
	if s.HealthCheck == nil || s.HealthCheck.Disable {
		return nil
	}
	return s.HealthCheck.Test
}

// healthURL is the http:// URL a health check probes, nil if none.
func healthURL(t *testing.T, s types.ServiceConfig) *url.URL {
	t.Helper()
	test := healthTest(s)
	if len(test) < 2 || test[0] != "CMD" {
		return nil
	}
	for _, arg := range test[1:] {
		if strings.HasPrefix(arg, "http://") {
			u, err := url.Parse(arg)
			if err != nil {
				t.Fatalf("service %s: health check URL %q: %v", s.Name, arg, err)
			}
			return u
		}
	}
	return nil
}

func isLoopbackHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

func minorVersion(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// natsOptions checks how the nats service runs the server, and returns the
// options of the configuration file it is given.
func natsOptions(t *testing.T, s types.ServiceConfig) *server.Options {
	t.Helper()
	i := slices.Index(s.Command, "-c")
	if i < 0 {
		i = slices.Index(s.Command, "--config")
	}
	if i < 0 || i+1 >= len(s.Command) {
		t.Fatalf("service %s: command %q does not name a config file (-c)", s.Name, s.Command)
	}
	target := s.Command[i+1]
	var source string
	for _, v := range s.Volumes {
		if v.Target == target {
			source = v.Source
		}
	}
	if source == "" {
		t.Fatalf("service %s: nothing is mounted at %s", s.Name, target)
	}
	// The config reads the users' passwords from the environment, which the
	// service gives it.
	for k, v := range serviceEnv(t, s) {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile(source)
	if err != nil {
		t.Fatalf("service %s: %s: %v", s.Name, source, err)
	}
	return opts
}

// TestComposeFile checks the default profile: NATS and the production
// workers.
func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	if got := slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	}); !slices.Equal(got, []string{"nats", "worker"}) {
		t.Errorf("services without a profile = %q, want nats and worker", got)
	}

	nats, ok := p.Services["nats"]
	if !ok {
		t.Fatal("no nats service")
	}
	if m := regexp.MustCompile(`^nats:2\.(\d+)(\.\d+)?-alpine`).FindStringSubmatch(nats.Image); m == nil || minorVersion(m[1]) < 10 {
		t.Errorf("nats image %q, want nats:2.10-alpine or newer (alpine: wget for the health check)", nats.Image)
	}
	opts := natsOptions(t, nats)
	if !opts.JetStream || !opts.SyncAlways {
		t.Errorf("the nats config: jetstream %v, sync_interval always %v; want both", opts.JetStream, opts.SyncAlways)
	}
	// The store is a named volume: it outlives the container.
	var store *types.ServiceVolumeConfig
	for i, v := range nats.Volumes {
		if v.Target == opts.StoreDir {
			store = &nats.Volumes[i]
		}
	}
	if store == nil || store.Type != types.VolumeTypeVolume || p.Volumes[store.Source].Name == "" {
		t.Errorf("the JetStream store %q is not a named volume: %+v", opts.StoreDir, store)
	}
	if probe := healthURL(t, nats); probe == nil || probe.Path != "/healthz" || probe.Port() != strconv.Itoa(opts.HTTPPort) {
		t.Errorf("nats health check %q, want /healthz on the monitoring port %d", healthTest(nats), opts.HTTPPort)
	}

	ws := workers(p)
	if len(ws) != 1 || ws[0].Name != "worker" {
		t.Fatalf("worker services = %d, want one: worker", len(ws))
	}
	w := ws[0]
	if w.Deploy == nil || w.Deploy.Replicas == nil || *w.Deploy.Replicas < 2 {
		t.Errorf("worker: deploy.replicas %v, want 2", w.Deploy)
	}
	if !slices.ContainsFunc(w.EnvFiles, func(f types.EnvFile) bool { return filepath.Base(f.Path) == ".env" && bool(f.Required) }) {
		t.Errorf("worker: env_file %+v, want the required .env", w.EnvFiles)
	}
	// README asks for Compose v2: the long form of env_file (path:,
	// required:) needs Compose 2.24.
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^\s*(-\s*)?(path|required):`).Match(raw) {
		t.Error("docker-compose.yml uses env_file's long form (path:, required:), which Compose before 2.24 refuses; README asks for Compose v2")
	}
	cfg := checkWorkerService(t, p, w)
	if cfg.BaseURL != "https://ivs.idenfy.com" {
		t.Errorf("worker: IDENFY_BASE_URL %q, want iDenfy's by default", cfg.BaseURL)
	}
}

// TestComposeSandboxProfile checks `docker compose --profile sandbox up`:
// the simulator, and workers that reach it on a loopback address (the only
// place the worker accepts plain http://), apart from the production ones.
func TestComposeSandboxProfile(t *testing.T) {
	p := loadCompose(t, "sandbox")
	sim, ok := p.Services["idenfy-sim"]
	if !ok {
		t.Fatal("no idenfy-sim service in the sandbox profile")
	}
	if !slices.Equal(sim.Profiles, []string{"sandbox"}) {
		t.Errorf("idenfy-sim profiles %q, want only sandbox", sim.Profiles)
	}
	if !slices.Equal(sim.Entrypoint, []string{"/usr/local/bin/idenfy-sim"}) {
		t.Errorf("idenfy-sim entrypoint %q, want the simulator", sim.Entrypoint)
	}
	simPort := "8089"
	if i := slices.Index(sim.Command, "-addr"); i >= 0 && i+1 < len(sim.Command) {
		_, simPort, _ = net.SplitHostPort(sim.Command[i+1])
	}
	simKey, simSecret := idenfytest.DefaultAPIKey, idenfytest.DefaultAPISecret
	if i := slices.Index(sim.Command, "-api-key"); i >= 0 && i+1 < len(sim.Command) {
		simKey = sim.Command[i+1]
	}
	if i := slices.Index(sim.Command, "-api-secret"); i >= 0 && i+1 < len(sim.Command) {
		simSecret = sim.Command[i+1]
	}

	// The default profile's services are still there, so the sandbox
	// workers must keep out of the production workers' way.
	var prod []config
	var sandbox []types.ServiceConfig
	for _, s := range workers(p) {
		if slices.Contains(s.Profiles, "sandbox") {
			sandbox = append(sandbox, s)
		} else {
			prod = append(prod, checkWorkerService(t, p, s))
		}
	}
	if len(prod) == 0 || len(sandbox) == 0 {
		t.Fatalf("%d production and %d sandbox workers, want some of each", len(prod), len(sandbox))
	}
	metricsPorts := map[string]string{}
	for _, s := range sandbox {
		cfg := checkWorkerService(t, p, s)
		if s.NetworkMode != "service:idenfy-sim" {
			t.Errorf("%s: network_mode %q, want service:idenfy-sim (the simulator on loopback)", s.Name, s.NetworkMode)
		}
		if dep, ok := s.DependsOn["idenfy-sim"]; !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s: depends_on idenfy-sim = %+v, want condition %s", s.Name, dep, types.ServiceConditionHealthy)
		}
		u, _ := url.Parse(cfg.BaseURL)
		if u == nil || u.Scheme != "http" || !isLoopbackHost(u.Hostname()) || u.Port() != simPort {
			t.Errorf("%s: IDENFY_BASE_URL %q, want http://127.0.0.1:%s (the simulator in its namespace)", s.Name, cfg.BaseURL, simPort)
		}
		if cfg.APIKey != simKey || cfg.APISecret != simSecret {
			t.Errorf("%s: its iDenfy credentials are not the simulator's", s.Name)
		}
		for _, pc := range prod {
			if cfg.Prefix == pc.Prefix || cfg.Stream == pc.Stream || cfg.Bucket == pc.Bucket {
				t.Errorf("%s shares subjects (%s), stream (%s) or bucket (%s) with a production worker: they would take each other's requests",
					s.Name, cfg.Prefix, cfg.Stream, cfg.Bucket)
			}
		}
		// Workers in one network namespace cannot share a port.
		_, port, _ := net.SplitHostPort(cfg.MetricsAddr)
		if other, ok := metricsPorts[port]; ok {
			t.Errorf("%s and %s both serve metrics on port %s of the simulator's namespace", s.Name, other, port)
		}
		metricsPorts[port] = s.Name
		if port == simPort {
			t.Errorf("%s: METRICS_ADDR %q takes the simulator's port", s.Name, cfg.MetricsAddr)
		}
		if s.Deploy != nil && s.Deploy.Replicas != nil && *s.Deploy.Replicas > 1 {
			t.Errorf("%s: %d replicas would collide on METRICS_ADDR in one namespace", s.Name, *s.Deploy.Replicas)
		}
	}
}

// envExampleLine is a variable of .env.example, set or commented out.
var envExampleLine = regexp.MustCompile(`^(#\s*)?([A-Z][A-Z0-9_]*)=`)

// TestEnvExampleListsEveryVariable checks that .env.example documents every
// variable the worker reads and no other, and sets the required ones.
func TestEnvExampleListsEveryVariable(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]bool{} // name: set (not commented out)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		m := envExampleLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		name, set := m[2], m[1] == ""
		if _, forCompose := natsPasswords[name]; forCompose {
			if set {
				listed[name] = true
			}
			continue
		}
		if !knownVar(name) {
			t.Errorf(".env.example:%d: %s is not a variable the worker reads", n, name)
		}
		if set && listed[name] {
			t.Errorf(".env.example:%d: %s is set twice", n, name)
		}
		listed[name] = listed[name] || set
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, v := range envVars {
		if _, ok := listed[v.name]; !ok {
			name := v.name
			t.Errorf(".env.example does not list %s", name)
		}
	}
	for _, name := range []string{"IDENFY_API_KEY", "IDENFY_API_SECRET"} {
		if !listed[name] && !listed[name+"_FILE"] {
			t.Errorf(".env.example sets neither %s nor %s_FILE: a copy of it would not start", name, name)
		}
	}
	for name := range natsPasswords {
		if !listed[name] {
			t.Errorf(".env.example does not list %s", name)
		}
	}
}

// TestComposeRequiresNATSPasswords checks that compose refuses to start
// without a password for each NATS user, naming it, rather than running
// NATS with an empty one: .env.example leaves them for the operator to set.
func TestComposeRequiresNATSPasswords(t *testing.T) {
	for name := range natsPasswords {
		t.Run(name, func(t *testing.T) {
			extra := maps.Clone(natsPasswords)
			delete(extra, name)
			_, err := tryLoadCompose(t, extra, "sandbox")
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("docker-compose.yml without %s loads with error %v, want one naming it", name, err)
			}
		})
	}
}

// TestNATSConfig checks that deploy/nats-server.conf parses without a
// warning, syncs every JetStream write, and starts a server that reports
// healthy on its monitoring port.
func TestNATSConfig(t *testing.T) {
	setNATSPasswords(t)
	opts, err := server.ProcessConfigFile(natsConfigPath)
	if err != nil {
		t.Fatalf("%s: %v", natsConfigPath, err)
	}
	// server.ProcessConfigFile lets warnings through; the method does not.
	if err := new(server.Options).ProcessConfigFile(natsConfigPath); err != nil {
		t.Errorf("%s: %v", natsConfigPath, err)
	}
	if !opts.JetStream || opts.StoreDir != "/data" || !opts.SyncAlways {
		t.Errorf("jetstream %v, store_dir %q, sync always %v; want true, /data, true", opts.JetStream, opts.StoreDir, opts.SyncAlways)
	}
	if opts.ServerName == "" {
		t.Error("no server_name: JetStream places streams by it, it should not change on restart")
	}
	if opts.HTTPPort <= 0 {
		t.Errorf("monitoring port %d, want one (the health check asks /healthz)", opts.HTTPPort)
	}
	if opts.Port != 4222 {
		t.Errorf("client port %d, want 4222", opts.Port)
	}
	if opts.JetStreamMaxStore <= 0 || opts.JetStreamMaxMemory <= 0 || opts.MaxPayload <= 0 || opts.MaxConn <= 0 {
		t.Errorf("limits: max_file_store %d, max_memory_store %d, max_payload %d, max_connections %d; want each set",
			opts.JetStreamMaxStore, opts.JetStreamMaxMemory, opts.MaxPayload, opts.MaxConn)
	}
	// The worker's largest message (a job, 64 KiB) must fit.
	if opts.MaxPayload < 64<<10 {
		t.Errorf("max_payload %d is below the worker's job size limit", opts.MaxPayload)
	}

	// Run it, on this machine's terms: loopback, random ports, a temporary
	// store.
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPHost, opts.HTTPPort = "127.0.0.1", -1
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(waitLimit) {
		t.Fatal("the server is not ready")
	}
	if js := ns.JetStreamConfig(); js == nil || !js.SyncAlways {
		t.Errorf("JetStream config %+v, want sync always", js)
	}
	waitStatus(t, fmt.Sprintf("http://%s/healthz", ns.MonitorAddr()), 200)
}

// TestComposeNATSMatchesTests checks that compose runs the NATS minor
// version the tests embed (go.mod's nats-server): what is shipped is what
// is tested.
func TestComposeNATSMatchesTests(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nats-server/v2 v2\.(\d+)\.`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/nats-io/nats-server/v2")
	}
	tested := string(m[1])
	nats := loadCompose(t).Services["nats"]
	img := regexp.MustCompile(`^nats:2\.(\d+)(\.\d+)?-alpine$`).FindStringSubmatch(nats.Image)
	if img == nil || img[1] != tested {
		t.Errorf("nats image %q, want nats:2.%s-alpine: the tests embed nats-server 2.%s", nats.Image, tested, tested)
	}
}

// TestDockerfileHealthcheck checks that the image reports its health
// itself, with the worker binary its ENTRYPOINT names.
func TestDockerfileHealthcheck(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	hc := regexp.MustCompile(`(?m)^HEALTHCHECK .*CMD (\[.*\])\s*$`).FindStringSubmatch(text)
	if hc == nil {
		t.Fatal("the Dockerfile has no HEALTHCHECK ... CMD [...]")
	}
	if want := `["/usr/local/bin/idenfy-worker", "healthcheck"]`; hc[1] != want {
		t.Errorf("HEALTHCHECK CMD %s, want %s", hc[1], want)
	}
	if !strings.Contains(text, `ENTRYPOINT ["/usr/local/bin/idenfy-worker"]`) {
		t.Error("the Dockerfile's ENTRYPOINT is not /usr/local/bin/idenfy-worker, which HEALTHCHECK runs")
	}
}

// TestServerVarsAreTheNATSPasswords: the variables the worker keeps quiet
// about are exactly the passwords compose gives the NATS server.
func TestServerVarsAreTheNATSPasswords(t *testing.T) {
	if len(serverVars) != len(natsPasswords) {
		t.Fatalf("serverVars = %v, want the %d NATS passwords of compose", serverVars, len(natsPasswords))
	}
	for _, name := range serverVars {
		if _, ok := natsPasswords[name]; !ok {
			t.Errorf("serverVars has %s, which compose does not give the NATS server", name)
		}
	}
}
