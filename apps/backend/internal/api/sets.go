package api

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/gmini-dev/gmini/apps/backend/internal/auth"
	"github.com/gmini-dev/gmini/apps/backend/internal/failure"
	"github.com/gmini-dev/gmini/apps/backend/internal/sets"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// DefaultMaxSetBytes bounds POST /experiment-sets: a thousand experiments
// of about 8 KiB each. The set is read whole before any item is submitted
// (so a bad set creates nothing), hence the bound on the backend's memory
// (MaxInflightSets of them at once).
const DefaultMaxSetBytes = 8 << 20

// DefaultMaxInflightSets bounds the sets processed at once, each holding
// its body, its decoded experiments and SetConcurrency creates.
const DefaultMaxInflightSets = 2

// setsRoutes registers the experiment-set routes. The set's path
// parameter is not "id": authorize would take it for an experiment's, and
// a set is authorized as the collection (create, list, delete of
// experiments), once for the whole set.
func (s *server) setsRoutes(r *gin.Engine) {
	r.POST("/experiment-sets", bounded(s.setSlots, s.tooManySets), s.authorize(auth.VerbCreate), s.createSet)
	r.GET("/experiment-sets/:set", s.authorize(auth.VerbList), s.getSet)
	r.DELETE("/experiment-sets/:set", s.authorize(auth.VerbDelete), s.deleteSet)
}

func (s *server) createSet(c *gin.Context) {
	if err := s.checkSetBody(c.Request); err != nil {
		s.spawnFailed(c, "", err)
		return
	}
	body := http.MaxBytesReader(c.Writer, c.Request.Body, s.MaxSetBytes)
	req, err := sets.Decode(body, s.MaxBodyBytes)
	if err != nil {
		s.spawnFailed(c, "", err)
		return
	}
	ctx := c.Request.Context()
	who := auth.UserName(ctx)
	s.authorizeSetQueues(ctx, req.Items)
	results := s.sets.Submit(ctx, req, who)
	out := wire.SetSubmission{
		ID:        req.ID,
		Namespace: s.Experiments.Spawner.Namespace,
		Items:     make([]wire.SetItem, len(results)),
		Status:    "/experiment-sets/" + req.ID,
	}
	retry, logged := false, 0
	for i, r := range results {
		item := wire.SetItem{Index: r.Index, ID: r.ID, Job: r.Sub.Job}
		if r.Err == nil {
			item.State, item.Source = r.Sub.State, r.Sub.Source
		}
		switch {
		case r.Err != nil:
			item.Code = statusOf(r.Err)
			item.Message = failure.MessageOf(r.Err)
			item.Outcome = outcomeOf(item.Code)
			if item.Job == "" && item.Outcome == wire.OutcomeConflict {
				item.Job = jobspec.JobName(r.ID)
			}
			retry = retry || item.Code == http.StatusServiceUnavailable || item.Code == http.StatusTooManyRequests
			s.Metrics.SpawnErrors.WithLabelValues(strconv.Itoa(item.Code)).Inc()
			// A set failing as a whole (the API server gone) would log a
			// line per item; the first few say why.
			if logged < maxLoggedItems && item.Outcome != wire.OutcomeInvalid {
				logged++
				s.logFailure(c, "spawn experiment of set "+req.ID, r.ID, item.Code, r.Err)
			}
		case r.Sub.Created:
			item.Code, item.Outcome = http.StatusCreated, wire.OutcomeCreated
			s.Metrics.JobsCreated.Inc()
		default:
			item.Code, item.Outcome = http.StatusOK, wire.OutcomeExisting
			s.Metrics.JobsExisting.Inc()
		}
		s.Metrics.SetItems.WithLabelValues(item.Outcome).Inc()
		countOutcome(&out.Outcomes, item.Outcome)
		out.Items[i] = item
	}
	s.Metrics.Sets.Inc()
	s.Logger.InfoContext(ctx, "experiment set submitted", "set", req.ID, "items", len(results), "created", out.Outcomes.Created,
		"existing", out.Outcomes.Existing, "failed", out.Outcomes.Failed(), "user", who)
	// The request was read and every item answered: 200, the outcomes
	// inside. A Retry-After tells a client that a resend may do more.
	if retry {
		c.Header("Retry-After", retryAfterSeconds)
	}
	c.Header("Location", out.Status)
	c.JSON(http.StatusOK, out)
}

// authorizeSetQueues refuses the items whose queue the caller may not use,
// as POST /experiment refuses the experiment: one access review per queue
// the set names (or defaults to), not per item.
func (s *server) authorizeSetQueues(ctx context.Context, items []sets.Item) {
	verdicts := map[string]error{}
	for i := range items {
		it := &items[i]
		if it.Err != nil {
			continue
		}
		err, seen := verdicts[it.Exp.Queue]
		if !seen {
			qctx, cancel := context.WithTimeout(ctx, s.APITimeout)
			err = s.authorizeQueue(qctx, it.Exp.Queue)
			cancel()
			verdicts[it.Exp.Queue] = err
		}
		it.Err = err
	}
}

// maxLoggedItems bounds the log lines of one set's failed items.
const maxLoggedItems = 10

// outcomeOf names an item's status code.
func outcomeOf(code int) string {
	switch code {
	case http.StatusCreated:
		return wire.OutcomeCreated
	case http.StatusOK:
		return wire.OutcomeExisting
	case http.StatusConflict:
		return wire.OutcomeConflict
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return wire.OutcomeInvalid
	}
	return wire.OutcomeError
}

func countOutcome(o *wire.SetOutcomes, outcome string) {
	switch outcome {
	case wire.OutcomeCreated:
		o.Created++
	case wire.OutcomeExisting:
		o.Existing++
	case wire.OutcomeConflict:
		o.Conflict++
	case wire.OutcomeInvalid:
		o.Invalid++
	default:
		o.Error++
	}
}

// checkSetBody is checkBody with the set's limit.
func (s *server) checkSetBody(r *http.Request) error {
	if err := s.checkContentType(r); err != nil {
		return err
	}
	if r.ContentLength > s.MaxSetBytes {
		return failure.New(failure.TooLarge, "body is %d bytes; the limit of a set is %d", r.ContentLength, s.MaxSetBytes)
	}
	return nil
}

// tooManySets refuses a set beyond MaxInflightSets.
func (s *server) tooManySets(c *gin.Context) {
	s.spawnFailed(c, "", failure.New(failure.TooManyRequests, "%d experiment sets are being submitted already (--max-inflight-sets); retry after the Retry-After delay", s.MaxInflightSets))
}

// setID validates the :set path parameter as a POSTed set ID.
func (s *server) setID(c *gin.Context) (string, bool) {
	id := c.Param("set")
	if err := jobspec.ValidateSetID(id); err != nil {
		s.fail(c, &failure.Error{Kind: failure.Invalid, Err: err})
		return "", false
	}
	return id, true
}

func (s *server) getSet(c *gin.Context) {
	id, ok := s.setID(c)
	if !ok {
		return
	}
	opts, ok := s.listOptions(c)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.APITimeout)
	defer cancel()
	set, err := s.sets.Get(ctx, id, opts)
	if err != nil {
		s.logSetFailure(c, "get experiment set", id, s.fail(c, err), err)
		return
	}
	c.JSON(http.StatusOK, set)
}

func (s *server) deleteSet(c *gin.Context) {
	id, ok := s.setID(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	res, err := s.sets.Cancel(ctx, id)
	if err != nil {
		s.logSetFailure(c, "delete experiment set", id, s.fail(c, err), err)
		return
	}
	out := wire.SetCancellation{ID: id, Total: res.Total, Cancelled: res.Cancelled, Finished: res.Finished, Failed: len(res.Failed)}
	retry := false
	for i, f := range res.Failed {
		code := statusOf(f.Err)
		retry = retry || code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests
		out.Errors = append(out.Errors, wire.SetError{ID: f.ID, Job: f.Job, Code: code, Message: failure.MessageOf(f.Err)})
		if i < maxLoggedItems {
			s.logFailure(c, "delete experiment of set "+id, f.ID, code, f.Err)
		}
	}
	s.Logger.InfoContext(ctx, "experiment set deleted", "set", id, "total", out.Total, "cancelled", out.Cancelled,
		"finished", out.Finished, "failed", out.Failed, "user", auth.UserName(ctx))
	if retry {
		c.Header("Retry-After", retryAfterSeconds)
	}
	c.JSON(http.StatusOK, out)
}

// logSetFailure logs a set request that failed, with its cause.
func (s *server) logSetFailure(c *gin.Context, msg, id string, code int, err error) {
	level := slog.LevelInfo
	if code >= http.StatusInternalServerError {
		level = slog.LevelError
	}
	s.Logger.Log(c.Request.Context(), level, msg, "set", id, "code", code, "err", err)
}
