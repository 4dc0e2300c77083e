package cli

import (
	"fmt"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// queueColumns are the QUEUE and POSITION cells of a status: the
// LocalQueue, and while queued Kueue's position (0 is admitted next) with
// the estimated wait when there is one, e.g. "3 (~2m10s)".
func queueColumns(q *wire.Queue) (queue, position string) {
	if q == nil {
		return "-", "-"
	}
	position = "-"
	if q.Position != nil {
		position = fmt.Sprint(*q.Position)
		if q.ETA != nil {
			position += fmt.Sprintf(" (~%s)", max(time.Until(*q.ETA), 0).Round(time.Second))
		}
	}
	return q.Name, position
}
