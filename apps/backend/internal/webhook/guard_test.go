package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestGuardCheck(t *testing.T) {
	t.Parallel()
	extra := []netip.Prefix{netip.MustParsePrefix("203.0.0.0/16")}
	tests := []struct {
		name  string
		host  string   // the target's host (an IP literal names itself)
		allow []string // allowAddresses
		ip    string   // connected to
		want  bool
	}{
		{"public", "hooks.example.com", nil, "93.184.216.34", true},
		{"public IPv6", "hooks.example.com", nil, "2606:2800:220:1::1", true},
		{"loopback", "hooks.example.com", nil, "127.0.0.1", false},
		{"loopback elsewhere in 127/8", "hooks.example.com", nil, "127.3.4.5", false},
		{"IPv6 loopback", "hooks.example.com", nil, "::1", false},
		{"IPv4-mapped loopback", "hooks.example.com", nil, "::ffff:127.0.0.1", false},
		{"private 10/8", "hooks.example.com", nil, "10.0.0.1", false},
		{"private 172.16/12", "hooks.example.com", nil, "172.31.255.1", false},
		{"private 192.168/16", "hooks.example.com", nil, "192.168.1.1", false},
		{"unique local", "hooks.example.com", nil, "fd00::1", false},
		{"shared (CGNAT)", "hooks.example.com", nil, "100.64.0.1", false},
		{"benchmark (the local clusters)", "hooks.example.com", nil, "198.18.0.1", false},
		{"NAT64 of loopback", "hooks.example.com", nil, "64:ff9b::7f00:1", false},
		{"internalCIDRs", "hooks.example.com", nil, "203.0.5.5", false},
		{"metadata endpoint", "hooks.example.com", nil, "169.254.169.254", false},
		{"link-local", "hooks.example.com", nil, "169.254.1.1", false},
		{"IPv6 link-local", "hooks.example.com", nil, "fe80::1", false},
		{"unspecified", "hooks.example.com", nil, "0.0.0.0", false},
		{"IPv6 unspecified", "hooks.example.com", nil, "::", false},
		{"this network", "hooks.example.com", nil, "0.1.2.3", false},
		{"multicast", "hooks.example.com", nil, "224.0.0.1", false},
		{"IPv6 multicast", "hooks.example.com", nil, "ff02::1", false},
		{"broadcast", "hooks.example.com", nil, "255.255.255.255", false},
		{"loopback named by the host", "127.0.0.1", nil, "127.0.0.1", true},
		{"another loopback than the one named", "127.0.0.1", nil, "127.0.0.2", false},
		{"private named by allowAddresses", "ci.internal", []string{"10.1.2.3"}, "10.1.2.3", true},
		{"private in an allowed range", "ci.internal", []string{"10.1.0.0/16"}, "10.1.200.3", true},
		{"private outside the allowed range", "ci.internal", []string{"10.1.0.0/16"}, "10.2.0.1", false},
		{"loopback allowed by allowAddresses", "localhost", []string{"127.0.0.1"}, "127.0.0.1", true},
		{"internalCIDRs named", "hooks.example.com", []string{"203.0.5.5"}, "203.0.5.5", true},
		{"benchmark address named", "198.18.0.1", nil, "198.18.0.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, err := newGuard(tt.host, tt.allow, extra)
			if err != nil {
				t.Fatal(err)
			}
			err = g.check(netip.MustParseAddr(tt.ip))
			if (err == nil) != tt.want {
				t.Errorf("check(%s) = %v, want allowed %v", tt.ip, err, tt.want)
			}
			if err != nil && !errors.Is(err, errRefused) {
				t.Errorf("error %v is not errRefused", err)
			}
		})
	}
}

// TestGuardDials: the guard runs at connect time, on the address a name
// resolved to: "localhost" (127.0.0.1 through /etc/hosts, no DNS server)
// is refused unless the target allows that address; an IP literal target
// is allowed by its own name; 169.254.169.254 is refused even when a
// client is made for it.
func TestGuardDials(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	port := u.Port()
	tests := []struct {
		name  string
		host  string // of the target
		allow []string
		url   string
		want  bool
	}{
		{"a name resolving to loopback", "localhost", nil, "http://localhost:" + port + "/", false},
		{"a name resolving to loopback, allowed", "localhost", []string{"127.0.0.1", "::1"}, "http://localhost:" + port + "/", true},
		{"the loopback literal, named", "127.0.0.1", nil, "http://127.0.0.1:" + port + "/", true},
		{"a name for another target's address", "example.com", nil, "http://127.0.0.1:" + port + "/", false},
		{"the metadata endpoint", "hooks.example.com", nil, "http://169.254.169.254/latest/meta-data/", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, err := newGuard(tt.host, tt.allow, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tt.url, nil)
			resp, err := newClient(g, 5*time.Second, nil).Do(req)
			if err == nil {
				resp.Body.Close()
			}
			if (err == nil) != tt.want {
				t.Fatalf("POST %s = %v, want connected %v", tt.url, err, tt.want)
			}
			if err != nil && !errors.Is(err, errRefused) {
				t.Errorf("error %v: want the guard's refusal, not a failed connection", err)
			}
			if err != nil {
				var oe *net.OpError
				if !errors.As(err, &oe) || !strings.Contains(err.Error(), "internal") && !strings.Contains(err.Error(), "never") {
					t.Errorf("error %v does not say why", err)
				}
			}
		})
	}
}
