// Command netprobe is the client the NetworkPolicy tests run in pods: it
// tries one kind of connection until it sees what it expects, and prints
// what happened as one JSON line on stdout.
//
//	netprobe [flags] post URL BODY   POST BODY as application/json; open = any HTTP answer
//	netprobe [flags] dial HOST:PORT  open a TCP connection
//	netprobe serve ADDR              answer every HTTP request with 200 "ok"
//	netprobe [-count N -every D] tick [ARG...]
//	                                 print "tick <i> <time>" N times, D apart, then exit 0:
//	                                 the log-follow test's runner (it ignores the
//	                                 experiment, its ARG)
//
// With -expect open it tries every -interval until a try gets through or
// -within passes: an engine lets a new pod's traffic through only once it
// has seen the pod. With -expect blocked it tries until one try fails,
// then keeps trying for -hold, and every one of those must fail: a block
// that lets some tries through is no block. It exits 0 when it saw what
// it expected, 1 when not, 2 on bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Result is the JSON line netprobe prints.
type Result struct {
	Action string `json:"action"`
	Target string `json:"target"`
	Expect string `json:"expect"`
	// Met says whether the expectation held.
	Met bool `json:"met"`
	// Outcome of the try that decided: "open" (an HTTP answer, or a TCP
	// connection), "refused" (an ICMP or TCP reset answered the SYN),
	// "timeout" (nothing answered), or "error" (anything else).
	Outcome string `json:"outcome"`
	Status  int    `json:"status,omitempty"` // post: the HTTP status
	Body    string `json:"body,omitempty"`   // post: the start of the answer
	Error   string `json:"error,omitempty"`
	Tries   int    `json:"tries"`
	// OpenBeforeBlocked counts tries that got through before the first
	// blocked one (-expect blocked): the engine had not seen the pod yet.
	OpenBeforeBlocked int    `json:"openBeforeBlocked,omitempty"`
	Elapsed           string `json:"elapsed"`
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("netprobe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	expect := fs.String("expect", "open", "open or blocked")
	timeout := fs.Duration("timeout", 3*time.Second, "bound on one try")
	interval := fs.Duration("interval", 500*time.Millisecond, "pause between tries")
	within := fs.Duration("within", 60*time.Second, "how long to wait for the expected outcome")
	hold := fs.Duration("hold", 5*time.Second, "-expect blocked: how long every try must keep failing")
	count := fs.Int("count", 10, "tick: lines to print")
	every := fs.Duration("every", time.Second, "tick: pause between lines")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) == 2 && rest[0] == "serve" {
		return serve(rest[1], stderr)
	}
	if len(rest) >= 1 && rest[0] == "tick" {
		return tick(*count, *every, stdout)
	}
	var try func(context.Context, *Result) error
	switch {
	case len(rest) == 3 && rest[0] == "post":
		url, body := rest[1], rest[2]
		try = func(ctx context.Context, r *Result) error { return post(ctx, url, body, r) }
	case len(rest) == 2 && rest[0] == "dial":
		addr := rest[1]
		try = func(ctx context.Context, r *Result) error { return dial(ctx, addr) }
	default:
		fmt.Fprintln(stderr, "usage: netprobe [flags] post URL BODY | dial HOST:PORT | serve ADDR | tick [ARG...]")
		return 2
	}
	if *expect != "open" && *expect != "blocked" {
		fmt.Fprintf(stderr, "netprobe: -expect %q: want open or blocked\n", *expect)
		return 2
	}
	r := Result{Action: rest[0], Target: rest[1], Expect: *expect}
	probe(&r, try, *timeout, *interval, *within, *hold)
	if err := json.NewEncoder(stdout).Encode(r); err != nil {
		return 2
	}
	if !r.Met {
		return 1
	}
	return 0
}

// probe runs try as the expectation says and fills in r.
func probe(r *Result, try func(context.Context, *Result) error, timeout, interval, within, hold time.Duration) {
	start := time.Now()
	defer func() { r.Elapsed = time.Since(start).Round(time.Millisecond).String() }()
	once := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		r.Tries++
		r.Status, r.Body, r.Error = 0, "", ""
		err := try(ctx, r)
		r.Outcome = classify(err)
		if err != nil {
			r.Error = err.Error()
		}
		return err
	}
	deadline := start.Add(within)
	var blockedSince time.Time
	for {
		err := once()
		switch {
		case r.Expect == "open" && err == nil:
			r.Met = true
			return
		case r.Expect == "blocked" && err == nil:
			if !blockedSince.IsZero() {
				return // got through after a block: not met
			}
			r.OpenBeforeBlocked++
		case r.Expect == "blocked":
			if blockedSince.IsZero() {
				blockedSince = time.Now()
			}
			if time.Since(blockedSince) >= hold {
				r.Met = true
				return
			}
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(interval)
	}
}

func post(ctx context.Context, url, body string, r *Result) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	// A fresh connection per try: a kept-alive one would outlive a policy.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	r.Status, r.Body = resp.StatusCode, string(b)
	return nil
}

func dial(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// classify names how a try ended. kube-router rejects a blocked SYN with
// ICMP port unreachable, which the kernel reports as ECONNREFUSED; engines
// that drop it (kindnet) leave the try to time out.
func classify(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "open"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "error"
}

func serve(addr string, stderr io.Writer) int {
	srv := &http.Server{
		Addr:              addr,
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "ok\n")
		}),
	}
	err := srv.ListenAndServe()
	fmt.Fprintf(stderr, "netprobe serve %s: %v\n", addr, err)
	return 1
}

// tick prints count numbered, time-stamped lines, every apart: a runner
// whose output a follower can time.
func tick(count int, every time.Duration, stdout io.Writer) int {
	for i := range count {
		if i > 0 {
			time.Sleep(every)
		}
		if _, err := fmt.Fprintf(stdout, "tick %d %s\n", i, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return 2
		}
	}
	return 0
}
