//go:build unix

// Command pause is the pod sandbox process: it holds the pod's namespaces open
// until the kubelet stops the sandbox with SIGTERM (or a person with SIGINT),
// then exits 0. As PID 1 of a pod that shares its process namespace it also
// reaps orphaned children, as the upstream pause image does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child so that none stays a zombie; one SIGCHLD
// may stand for several exits.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
