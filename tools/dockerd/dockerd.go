// Package dockerd installs and runs a Docker engine of the project's own,
// for kind on machines that have none: Debian's docker.io, started by the
// harness with its data, exec root, bridge, address pools and cgroups all
// named as the project's, so Stop can remove exactly what it made and
// nothing else.
//
// Network safety: every address it hands out lies in 198.18.0.0/15 (the
// range reserved for network tests, as the local node's); it never turns
// on IP forwarding, masquerades nothing, and drops forwarded traffic from
// its ranges to anywhere outside 198.18.0.0/15, so no container can reach
// beyond this machine. Containers' DNS goes to an address of this machine
// that answers nothing, so no name is looked up outside either.
package dockerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/gmini-dev/gmini/tools/images"
	"github.com/gmini-dev/gmini/tools/internal/capdrop"
	"github.com/gmini-dev/gmini/tools/internal/hostpkgs"
	"github.com/gmini-dev/gmini/tools/internal/layout"
)

// The engine's names and ranges. The local node uses 198.18.0.0/24 (host
// links), 198.18.128.0/18 (pods) and 198.19.0.0/18 (services); the engine
// takes 198.18.64.0/18, which none of them touches.
const (
	// Bridge is the engine's default bridge (Docker's docker0).
	Bridge = "gminidock0"
	// BridgeAddr is the bridge's address and prefix (--bip).
	BridgeAddr = "198.18.64.1/24"
	// KindNetwork is the network kind puts its nodes on, made by Start
	// with masquerading off and an IPv4 subnet only (kind would otherwise
	// make one with masquerading and IPv6); kind uses a network of that
	// name when one exists.
	KindNetwork       = "kind"
	KindNetworkSubnet = "198.18.96.0/24"
	// PoolBase is where the engine takes the subnets of other networks
	// (default-address-pools), one /24 each.
	PoolBase = "198.18.97.0/24"
	// Range holds every address above: the source of the rule that keeps
	// containers' traffic on this machine.
	Range = "198.18.64.0/18"
	// CgroupParent holds the containers' cgroups, in every hierarchy.
	CgroupParent = "gmini-docker"
	// Socket is where the engine listens: Docker's default, so the docker
	// CLI and kind find it without settings.
	Socket = "/var/run/docker.sock"
	// Runtime is the name of the capability-fitting runtime (gmini-runc)
	// when the engine registers it.
	Runtime = "gmini-runc"
)

// testNet is 198.18.0.0/15: the only destinations containers may reach.
const testNet = "198.18.0.0/15"

// Engine is the project's Docker engine of one checkout.
type Engine struct {
	Dir     string // _output/docker: data, exec root, config, log, state
	Tools   string // the tools module, to build gmini-runc
	BinDir  string // where gmini-runc is built
	Log     *slog.Logger
	Package hostpkgs.Package // docker.io
}

// New returns the engine of the checkout l.
func New(l layout.Layout, log *slog.Logger) *Engine {
	return &Engine{Dir: l.Output("docker"), Tools: l.Tools(), BinDir: l.Output("bin"), Log: log, Package: "docker.io"}
}

func (e *Engine) dataRoot() string   { return filepath.Join(e.Dir, "data") }
func (e *Engine) execRoot() string   { return filepath.Join(e.Dir, "run") }
func (e *Engine) configFile() string { return filepath.Join(e.Dir, "daemon.json") }
func (e *Engine) pidFile() string    { return filepath.Join(e.Dir, "dockerd.pid") }
func (e *Engine) stateFile() string  { return filepath.Join(e.Dir, "state.json") }

// LogFile is the engine's log.
func (e *Engine) LogFile() string { return filepath.Join(e.Dir, "dockerd.log") }

// state is what Stop needs to undo Start, written before the engine starts.
type state struct {
	PID int `json:"pid"`
	// Runtime is set when gmini-runc is the default runtime.
	Runtime string `json:"runtime,omitempty"`
	// Files dockerd makes in fixed places (its trust key, its plugin
	// directory) that were not there before: Stop removes them.
	Made []string `json:"made,omitempty"`
}

// fixedPaths are what dockerd 20.10 makes outside its data and exec roots,
// whatever it is told.
var fixedPaths = []string{"/etc/docker/key.json", "/var/run/docker"}

// answers reports whether a Docker engine answers on the default socket.
func answers(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").Run() == nil
}

// Running returns the PID of this checkout's engine, 0 when none runs.
func (e *Engine) Running() int {
	st, err := e.readState()
	if err != nil || st == nil || !alive(st.PID) {
		return 0
	}
	return st.PID
}

// Start installs docker.io if missing, and starts the engine unless one
// answers already (then it uses that one and owns nothing). Idempotent. A
// start that fails removes what it made.
func (e *Engine) Start(ctx context.Context) error {
	if pid := e.Running(); pid != 0 && answers(ctx) {
		e.Log.Info("the project's Docker engine runs already", "pid", pid, "socket", Socket)
		return nil
	}
	if answers(ctx) {
		e.Log.Info("a Docker engine answers already; using it, starting none", "socket", Socket)
		return nil
	}
	// What a previous engine left, if it died, goes first.
	if err := e.Stop(ctx); err != nil {
		return fmt.Errorf("clean up the previous engine: %w", err)
	}
	if err := hostpkgs.Ensure(ctx, e.Log, e.Package); err != nil {
		return fmt.Errorf("install Debian's docker.io: %w", err)
	}
	if err := checkFree(); err != nil {
		return err
	}
	if err := os.MkdirAll(e.Dir, 0o755); err != nil {
		return err
	}
	// The state first: from here on, Stop knows there is something to
	// remove.
	var st state
	for _, p := range fixedPaths {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			st.Made = append(st.Made, p)
		}
	}
	if err := e.writeState(st); err != nil {
		return err
	}
	if err := e.start(ctx, st); err != nil {
		return errors.Join(err, e.Stop(ctx))
	}
	return nil
}

func (e *Engine) start(ctx context.Context, st state) error {
	// dockerd names its own bridge docker0; one of another name it must
	// be given, made (--bridge, without --bip).
	if err := makeBridge(ctx); err != nil {
		return err
	}
	cfg, runtimeBin, err := e.config(ctx)
	if err != nil {
		return err
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(e.configFile(), data, 0o644); err != nil {
		return err
	}
	logf, err := os.OpenFile(e.LogFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// A socket file left by an engine that died keeps dockerd from
	// listening; one of a live engine would have answered in Start.
	_ = os.Remove(Socket)
	cmd := exec.Command("dockerd", "--config-file", e.configFile())
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: it outlives `make docker` and gets no terminal signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dockerd: %w", err)
	}
	st.PID, st.Runtime = cmd.Process.Pid, runtimeBin
	if err := e.writeState(st); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	go func() { _ = cmd.Wait() }() // reaped if it dies while we wait
	e.Log.Info("starting the project's Docker engine", "pid", st.PID, "dir", e.Dir, "bridge", Bridge+" "+BridgeAddr, "log", e.LogFile())
	err = waitFor(ctx, 60*time.Second, func() (bool, error) {
		if !alive(st.PID) || zombie(st.PID) {
			return false, errors.New("it exited")
		}
		return answers(ctx), nil
	})
	if err != nil {
		return fmt.Errorf("dockerd (pid %d) did not answer: %w; the end of its log (%s):\n%s", st.PID, err, e.LogFile(), tail(e.LogFile(), 5))
	}
	if err := e.contain(ctx); err != nil {
		return err
	}
	e.Log.Info("the project's Docker engine answers", "pid", st.PID, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// config is daemon.json, and the runtime wrapper when the machine needs it.
func (e *Engine) config(ctx context.Context) (map[string]any, string, error) {
	dns, _, _ := strings.Cut(BridgeAddr, "/")
	cfg := map[string]any{
		"data-root":     e.dataRoot(),
		"exec-root":     e.execRoot(),
		"pidfile":       e.pidFile(),
		"hosts":         []string{"unix://" + Socket},
		"bridge":        Bridge,
		"cgroup-parent": CgroupParent,
		"default-address-pools": []map[string]any{
			{"base": PoolBase, "size": 24},
		},
		"iptables": true,
		// No forwarding, no masquerading: containers reach this machine
		// and each other, nothing beyond.
		"ip-forward": false,
		"ip-masq":    false,
		"ipv6":       false,
		"ip6tables":  false,
		// The bridge's own address: nothing answers DNS there, so a
		// lookup of an outside name fails at once, on this machine.
		"dns":            []string{dns},
		"storage-driver": "overlay2",
		"log-driver":     "json-file",
		"log-opts":       map[string]string{"max-size": "10m", "max-file": "2"},
		// Unused, but dockerd stats it.
		"exec-opts":    []string{"native.cgroupdriver=cgroupfs"},
		"live-restore": false,
	}
	mask, err := capdrop.Bounding()
	if err != nil {
		return nil, "", err
	}
	missing := capdrop.Missing(mask)
	if len(missing) == 0 {
		return cfg, "", nil
	}
	bin := filepath.Join(e.BinDir, Runtime)
	if err := images.GoBuild(ctx, e.Tools, "./cmd/gmini-runc", bin, runtime.GOARCH); err != nil {
		return nil, "", fmt.Errorf("build %s: %w", Runtime, err)
	}
	e.Log.Info("the bounding set lacks capabilities: privileged containers run through "+Runtime, "missing", missing, "runtime", bin)
	cfg["runtimes"] = map[string]any{Runtime: map[string]string{"path": bin}}
	cfg["default-runtime"] = Runtime
	return cfg, bin, nil
}

// contain adds what keeps containers' traffic on this machine, and makes
// kind's network.
func (e *Engine) contain(ctx context.Context) error {
	// DOCKER-USER is the engine's own chain, first in FORWARD; it goes
	// with the engine's chains on Stop.
	rule := []string{"-I", "DOCKER-USER", "-s", Range, "!", "-d", testNet, "-j", "DROP"}
	if out, err := exec.CommandContext(ctx, "iptables", rule...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables %s: %w: %s", strings.Join(rule, " "), err, out)
	}
	gw, _ := netip.ParsePrefix(KindNetworkSubnet)
	args := []string{"network", "create", "--driver", "bridge",
		"--subnet", KindNetworkSubnet, "--gateway", gw.Addr().Next().String(),
		"-o", "com.docker.network.bridge.enable_ip_masquerade=false",
		"-o", "com.docker.network.driver.mtu=1500",
		KindNetwork}
	if out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput(); err != nil && !strings.Contains(string(out), "already exists") {
		return fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// checkFree fails when the bridge or the engine's range is in use by
// something else: the engine must not take over what it did not make.
func checkFree() error {
	if _, err := os.Stat("/sys/class/net/" + Bridge); err == nil {
		return fmt.Errorf("a link %s exists already (left by an engine not started here?): remove it, or make docker-stop", Bridge)
	}
	out, err := exec.Command("ip", "-4", "route", "show", "to", "match", strings.Split(BridgeAddr, "/")[0]).Output()
	if err != nil {
		return fmt.Errorf("ip route: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// The blackhole of 198.18.0.0/15 (the local node's) and the
		// default route match every address; anything narrower is taken.
		if line == "" || strings.HasPrefix(line, "default") || strings.HasPrefix(line, "blackhole 198.18.0.0/15") {
			continue
		}
		return fmt.Errorf("the engine's range %s is routed already (%q): something else uses it", Range, line)
	}
	return nil
}

// makeBridge makes the engine's bridge with its address.
func makeBridge(ctx context.Context) error {
	for _, args := range [][]string{
		{"link", "add", Bridge, "type", "bridge"},
		{"addr", "add", BridgeAddr, "dev", Bridge},
		{"link", "set", Bridge, "up"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func waitFor(ctx context.Context, d time.Duration, ok func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		if done, err := ok(); done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

func (e *Engine) readState() (*state, error) {
	data, err := os.ReadFile(e.stateFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", e.stateFile(), err)
	}
	return &st, nil
}

func (e *Engine) writeState(st state) error {
	data, _ := json.Marshal(st)
	return os.WriteFile(e.stateFile(), data, 0o644)
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
