// Package capdrop fits an OCI runtime spec to the capability bounding set
// of the machine it runs on. Docker and containerd give a privileged
// container every capability the kernel knows; where the machine's
// bounding set lacks one (CAP_SYS_RESOURCE on the project's machines),
// runc then fails with "unable to apply caps: operation not permitted".
// Dropping what the machine cannot grant anyway is what the container
// would have had at best.
package capdrop

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// names are the capabilities by number, as in linux/capability.h.
var names = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// Missing returns the names of the known capabilities absent from the
// bounding set mask (the CapBnd of /proc/self/status).
func Missing(mask uint64) []string {
	var out []string
	for i, n := range names {
		if mask&(1<<i) == 0 {
			out = append(out, n)
		}
	}
	return out
}

// Bounding reads this process's bounding set.
func Bounding() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapBnd:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapBnd in /proc/self/status")
}

// capSets are the lists of an OCI process's capabilities object.
var capSets = []string{"bounding", "effective", "inheritable", "permitted", "ambient"}

// FromProcess removes drop from every capability list of an OCI process
// object (JSON), keeping every other field as it was. It reports whether
// anything changed.
func FromProcess(process map[string]any, drop []string) bool {
	caps, ok := process["capabilities"].(map[string]any)
	if !ok {
		return false
	}
	changed := false
	for _, set := range capSets {
		list, ok := caps[set].([]any)
		if !ok {
			continue
		}
		kept := slices.DeleteFunc(slices.Clone(list), func(c any) bool {
			s, _ := c.(string)
			return slices.Contains(drop, s)
		})
		if len(kept) != len(list) {
			caps[set] = kept
			changed = true
		}
	}
	return changed
}

// File removes drop from the capabilities in an OCI bundle's config.json
// (spec true: the process is under "process") or a `runc exec --process`
// file (spec false), rewriting it only when something changed.
func File(path string, spec bool, drop []string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	process := doc
	if spec {
		p, ok := doc["process"].(map[string]any)
		if !ok {
			return false, nil
		}
		process = p
	}
	if !FromProcess(process, drop) {
		return false, nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return false, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return true, os.WriteFile(path, out, fi.Mode().Perm())
}

// Targets finds, in runc's arguments, the files a wrapper must fit before
// runc reads them: the bundle's config.json of create and run (--bundle,
// -b; the working directory when absent) and the process file of exec
// (--process, -p).
func Targets(args []string, cwd string) (configs, processes []string) {
	cmd := ""
	bundle := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		value := func(long, short string) (string, bool) {
			if v, ok := strings.CutPrefix(a, long+"="); ok {
				return v, true
			}
			if (a == long || a == short) && i+1 < len(args) {
				i++
				return args[i], true
			}
			return "", false
		}
		if cmd == "" {
			// runc's global options that take a value.
			if _, ok := value("--root", ""); ok {
				continue
			}
			if _, ok := value("--log", ""); ok {
				continue
			}
			if _, ok := value("--log-format", ""); ok {
				continue
			}
			if _, ok := value("--criu", ""); ok {
				continue
			}
			if _, ok := value("--rootless", ""); ok {
				continue
			}
			if !strings.HasPrefix(a, "-") {
				cmd = a
			}
			continue
		}
		switch cmd {
		case "create", "run":
			if v, ok := value("--bundle", "-b"); ok {
				bundle = v
			}
		case "exec":
			if v, ok := value("--process", "-p"); ok {
				processes = append(processes, v)
			}
		}
	}
	if cmd == "create" || cmd == "run" {
		if bundle == "" {
			bundle = cwd
		}
		configs = append(configs, bundle+"/config.json")
	}
	return configs, processes
}
