package manifests

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// TestWebhooksComponent: the Component gives the backend its webhooks file
// from the Secret gmini-webhooks and HTTPS egress to public addresses, and
// nothing else: internal ranges and other ports stay as the overlay has
// them. Without it every delivery would be blocked.
func TestWebhooksComponent(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			plain := typed(t, o.dir)
			objs := withComponent(t, o.dir, o.namespace, "k8s/components/webhooks")
			if len(objs) != len(plain)+1 {
				t.Errorf("%d objects with the Component, %d without: want the NetworkPolicy more", len(objs), len(plain))
			}
			d := only[*appsv1.Deployment](t, objs, "gmini-backend")
			spec := d.Spec.Template.Spec
			c := spec.Containers[0]
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			if env["GMINI_WEBHOOKS_FILE"] != "/etc/gmini/webhooks/webhooks.yaml" || env["GMINI_HISTORY_DSN"] == "" && o.dir == "overlays/dev" {
				t.Errorf("backend env %v: want GMINI_WEBHOOKS_FILE beside the overlay's own", env)
			}
			mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.Name == "webhooks" && m.MountPath == "/etc/gmini/webhooks" && m.ReadOnly
			})
			vol := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == "webhooks" })
			if !mounted || vol < 0 || spec.Volumes[vol].Secret == nil || spec.Volumes[vol].Secret.SecretName != "gmini-webhooks" ||
				spec.Volumes[vol].Secret.Optional == nil || *spec.Volumes[vol].Secret.Optional {
				t.Errorf("webhooks volume %+v, mounts %+v: want the Secret gmini-webhooks, required, mounted read-only at /etc/gmini/webhooks", spec.Volumes, c.VolumeMounts)
			}
			if got, want := len(spec.Volumes), len(only[*appsv1.Deployment](t, plain, "gmini-backend").Spec.Template.Spec.Volumes)+1; got != want {
				t.Errorf("%d volumes, want the overlay's and webhooks: %d", got, want)
			}

			backend := endpoint{namespace: o.namespace, labels: d.Spec.Template.Labels, ip: "198.18.128.10"}
			out := networkingv1.PolicyTypeEgress
			tcp := corev1.ProtocolTCP
			for _, tt := range []struct {
				name string
				ip   string
				port int32
				want bool
			}{
				{"a public receiver", "93.184.216.34", 443, true},
				{"a public IPv6 receiver", "2606:2800:220:1::1", 443, true},
				{"plain http", "93.184.216.34", 80, false},
				{"another port", "93.184.216.34", 8443, false},
				{"the metadata endpoint", "169.254.169.254", 443, false},
				{"a private address", "10.0.0.5", 443, false},
				{"a private address (172.16/12)", "172.20.0.5", 443, false},
				{"a shared address", "100.64.0.5", 443, false},
				{"loopback", "127.0.0.1", 443, false},
				{"the local clusters' range", "198.18.0.1", 443, false},
				{"a unique local IPv6 address", "fd00::5", 443, false},
			} {
				// What the Component does not open is as the overlay
				// has it (prod reaches its API server in 10/8 on 443).
				want := tt.want || allowed(t, policies(plain), out, backend, endpoint{ip: tt.ip}, tcp, tt.port)
				got := allowed(t, policies(objs), out, backend, endpoint{ip: tt.ip}, tcp, tt.port)
				if got != want {
					t.Errorf("%s (%s:%d) allowed %v, want %v", tt.name, tt.ip, tt.port, got, want)
				}
			}
			if allowed(t, policies(plain), out, backend, endpoint{ip: "93.184.216.34"}, tcp, 443) {
				t.Error("without the Component a public receiver is reached: the test would prove nothing")
			}
		})
	}
}
