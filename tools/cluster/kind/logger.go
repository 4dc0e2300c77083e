package kind

import (
	"context"
	"fmt"
	"log/slog"

	kindlog "sigs.k8s.io/kind/pkg/log"
)

// slogAdapter lets kind's provider write through an injected *slog.Logger:
// kind's V(0) messages become Info, V(1) and above Debug.
type slogAdapter struct{ log *slog.Logger }

var _ kindlog.Logger = slogAdapter{}

func (a slogAdapter) Warn(message string)              { a.log.Warn(message) }
func (a slogAdapter) Warnf(format string, args ...any) { a.log.Warn(fmt.Sprintf(format, args...)) }
func (a slogAdapter) Error(message string)             { a.log.Error(message) }
func (a slogAdapter) Errorf(format string, args ...any) {
	a.log.Error(fmt.Sprintf(format, args...))
}

func (a slogAdapter) V(level kindlog.Level) kindlog.InfoLogger {
	l := slog.LevelInfo
	if level > 0 {
		l = slog.LevelDebug
	}
	return slogInfo{log: a.log, level: l}
}

type slogInfo struct {
	log   *slog.Logger
	level slog.Level
}

func (i slogInfo) Info(message string) { i.log.Log(context.Background(), i.level, message) }
func (i slogInfo) Infof(format string, args ...any) {
	if i.Enabled() {
		i.log.Log(context.Background(), i.level, fmt.Sprintf(format, args...))
	}
}
func (i slogInfo) Enabled() bool { return i.log.Enabled(context.Background(), i.level) }
