package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestDispatch(t *testing.T) {
	known := map[string]int{"kubelet": 0, "kube-apiserver": 0}
	tests := []struct {
		name  string
		argv  []string
		want  string
		args  []string
		found bool
	}{
		{"first argument", []string{"/out/kube", "kubelet", "--v=2"}, "kubelet", []string{"--v=2"}, true},
		{"link name", []string{"/usr/local/bin/kube-apiserver", "--etcd-servers=x"}, "kube-apiserver", []string{"--etcd-servers=x"}, true},
		{"link name wins over argument", []string{"kubelet", "kube-apiserver"}, "kubelet", []string{"kube-apiserver"}, true},
		{"no flags", []string{"kube", "kubelet"}, "kubelet", []string{}, true},
		{"unknown component", []string{"kube", "kubectl", "get"}, "", nil, false},
		{"no component", []string{"kube"}, "", nil, false},
		{"empty argv", nil, "", nil, false},
		{"flag first", []string{"kube", "--v=2", "kubelet"}, "", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, args, ok := dispatch(tt.argv, known)
			if name != tt.want || ok != tt.found || !slices.Equal(args, tt.args) {
				t.Errorf("dispatch(%q) = %q, %q, %v; want %q, %q, %v", tt.argv, name, args, ok, tt.want, tt.args, tt.found)
			}
		})
	}
}

func TestRunUnknownComponent(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"/x/kube", "etcdctl"}, &stderr); code != 2 {
		t.Errorf("exit code %d, want 2", code)
	}
	out := stderr.String()
	for _, want := range []string{`unknown component "etcdctl"`, "usage: kube COMPONENT", "etcd, kube-apiserver, kube-controller-manager, kube-proxy, kube-scheduler, kubelet"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
}
