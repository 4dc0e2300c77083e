package webhook

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
)

// DefaultReload is how often Live.Run reads the webhooks file again.
// The kubelet replaces a Secret's mounted file within about a minute of
// the Secret's change; this adds at most as much again.
const DefaultReload = 10 * time.Second

// Live is the webhooks configuration as the file says now: read at
// start, then again every few seconds, and applied when its content
// changed and validates. A change that does not validate (or a file that
// cannot be read) keeps the configuration before it, and says why in the
// log. Deliveries already made keep their targets: a sink removed, or a
// notify URL no longer allowed, is given up at its next attempt.
type Live struct {
	path string
	cur  atomic.Pointer[Config]
	sum  [sha256.Size]byte
	// seen is the content last read, valid or not: an invalid file is
	// reported once, not every look.
	seen [sha256.Size]byte
}

// Open reads and validates the webhooks file at path.
func Open(path string) (*Live, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("webhooks file %s: %w", path, err)
	}
	s := &Live{path: path, sum: sha256.Sum256(data)}
	s.seen = s.sum
	s.cur.Store(cfg)
	return s, nil
}

// Static is a Live that never changes.
func Static(cfg *Config) *Live {
	s := &Live{}
	s.cur.Store(cfg)
	return s
}

// Current is the configuration in force.
func (s *Live) Current() *Config { return s.cur.Load() }

// Admit checks a POST's notify URLs against the allowNotify in force.
func (s *Live) Admit(urls []string) error {
	cfg := s.Current()
	if len(urls) > 0 && len(cfg.Notify) == 0 {
		return failure.New(failure.Invalid, `"notify" is not enabled: the backend's webhooks file (--webhooks-file) has no allowNotify; leave "notify" out`)
	}
	return cfg.Admit(urls)
}

// Run reads the file every interval until ctx ends; count is told each
// change's result (applied, invalid).
func (s *Live) Run(ctx context.Context, interval time.Duration, log *slog.Logger, count func(result string)) {
	if s.path == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.reload(log, count)
		}
	}
}

// reload reads the file once and applies it if it changed and validates.
func (s *Live) reload(log *slog.Logger, count func(string)) {
	data, err := readFile(s.path)
	if err != nil {
		// A Secret's file is swapped by a symlink change: a read that
		// fails is looked at again next time, and reported when it
		// keeps failing.
		var none [sha256.Size]byte
		if s.seen != none {
			log.Warn("webhooks file unreadable; the configuration in force stays", "err", err)
			s.seen = none
		}
		return
	}
	sum := sha256.Sum256(data)
	if sum == s.seen {
		return
	}
	s.seen = sum
	if sum == s.sum {
		return // back to what is in force
	}
	cfg, err := Parse(data)
	if err != nil {
		log.Error("webhooks file changed but is not valid; the configuration in force stays", "file", s.path, "err", err)
		count("invalid")
		return
	}
	old := s.Current()
	s.sum = sum
	s.cur.Store(cfg)
	log.Info("webhooks file reloaded", "file", s.path, "config", cfg.String(), "was", old.String())
	count("applied")
}
