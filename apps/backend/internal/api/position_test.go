package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/gmini-dev/gmini/apps/backend/internal/history"
	"github.com/gmini-dev/gmini/apps/backend/internal/lifecycle"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// fakePositions is Kueue's view of one LocalQueue, as the queue package
// would describe it.
type fakePositions struct {
	mu  sync.Mutex
	pos map[types.UID]int32
}

func (f *fakePositions) set(uid types.UID, p int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pos[uid] = p
}

func (f *fakePositions) Describe(_ context.Context, name string, job types.UID, queued bool) *wire.Queue {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := &wire.Queue{Name: name, ClusterQueue: "cq"}
	if p, ok := f.pos[job]; ok && queued {
		q.Position = ptr.To(p)
	}
	return q
}

// watchedStore reads kube's namespace ns through a running Watch, with
// positions as Kueue's view.
func watchedStore(t *testing.T, kube *fake.Clientset, ns string, positions *fakePositions) *lifecycle.Store {
	t.Helper()
	watch, err := lifecycle.NewWatch(kube, ns, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go watch.Run(ctx)
	return &lifecycle.Store{Client: kube, Namespace: ns, Queues: positions, Watch: watch}
}

// queuedJob is experiment id's Job in namespace ns, suspended and waiting
// in LocalQueue team-a at position (its UID is "u-"+id), read through a
// running watch with positions as Kueue's view.
func queuedJob(t *testing.T, id, ns string, position int32) (*batchv1.Job, *fake.Clientset, *fakePositions, *lifecycle.Store) {
	t.Helper()
	uid := types.UID("u-" + id)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: jobspec.JobName(id), Namespace: ns, UID: uid,
			Labels:      map[string]string{jobspec.LabelManagedBy: jobspec.LabelManagedByName, jobspec.LabelQueue: "team-a"},
			Annotations: map[string]string{jobspec.AnnotationID: id}},
		Spec: batchv1.JobSpec{Suspend: ptr.To(true)},
	}
	kube := fake.NewClientset(job)
	positions := &fakePositions{pos: map[types.UID]int32{uid: position}}
	return job, kube, positions, watchedStore(t, kube, ns, positions)
}

// TestEventsCarryQueuePosition: an experiment's event stream sends its
// queue position while it is Queued, once when known and again only when
// it changes, and nothing more once Kueue admitted it.
func TestEventsCarryQueuePosition(t *testing.T) {
	const id, ns = "q1", "exp"
	job, kube, positions, live := queuedJob(t, id, ns, 3)
	ctx := context.Background()

	e := newEventsEnv(t, Config{PositionPoll: 10 * time.Millisecond})
	// newEventsEnv gives the server a Service without live Jobs; this one
	// reads them.
	e.setLive(t, live)
	e.write(t, history.Record{ID: id})
	e.write(t, history.Record{ID: id, State: history.StateQueued})
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c, r := dialPath(t, u.Host, "/experiments/"+id+"/events")
	defer c.Close()

	var got []int32
	next := func() {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var name string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("after positions %v: %v", got, err)
			}
			line = strings.TrimSpace(line)
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				switch name {
				case wire.EventPosition:
					var p wire.Position
					if err := json.Unmarshal([]byte(v), &p); err != nil {
						t.Fatal(err)
					}
					if p.Experiment != id || p.Name != "team-a" || p.ClusterQueue != "cq" || p.Position == nil {
						t.Fatalf("position event %s", v)
					}
					got = append(got, *p.Position)
					return
				}
			}
		}
	}
	next()
	positions.set("u-q1", 1)
	next()
	// Unchanged for many looks: no event; admitted: none either, though
	// Kueue's view still had one.
	time.Sleep(100 * time.Millisecond)
	job.Spec.Suspend = ptr.To(false)
	if _, err := kube.BatchV1().Jobs(ns).Update(ctx, job, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Once the replica's watch has the admitted Job, Kueue's view no
	// longer counts.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, queued := live.QueuePosition(ctx, id); !queued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch did not see the Job admitted")
		}
	}
	positions.set("u-q1", 0)
	time.Sleep(200 * time.Millisecond)
	e.write(t, history.Record{ID: id, State: history.StateSucceeded})
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := readUntil(r, "event: done")
	if err != nil {
		t.Fatalf("the stream did not end with done: %v\n%s", err, rest)
	}
	if strings.Contains(rest, "event: position") {
		t.Errorf("a position after it stopped changing, or after the admission:\n%s", rest)
	}
	if want := []int32{3, 1}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("positions %v, want %v", got, want)
	}
}

// readUntil reads r up to and including the line want, or until the
// connection's deadline.
func readUntil(r *bufio.Reader, want string) (string, error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if strings.TrimSpace(line) == want {
			return b.String(), nil
		}
	}
}

func (e *eventsEnv) setLive(t *testing.T, live *lifecycle.Store) {
	t.Helper()
	e.svc.Live = live
}

// TestSetEventsCarryQueuePositions: a set's event stream sends the
// positions of its Queued items, each when known and when it changes.
func TestSetEventsCarryQueuePositions(t *testing.T) {
	const set, ns = "s1", "exp"
	job := func(id string, uid types.UID) *batchv1.Job {
		return &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: jobspec.JobName(id), Namespace: ns, UID: uid,
				Labels: map[string]string{jobspec.LabelManagedBy: jobspec.LabelManagedByName, jobspec.LabelQueue: "team-a",
					jobspec.LabelSet: set},
				Annotations: map[string]string{jobspec.AnnotationID: id}},
			Spec: batchv1.JobSpec{Suspend: ptr.To(true)},
		}
	}
	other := job("x1", "u-x1")
	delete(other.Labels, jobspec.LabelSet) // not an item: never reported
	kube := fake.NewClientset(job("i1", "u-i1"), job("i2", "u-i2"), other)
	positions := &fakePositions{pos: map[types.UID]int32{"u-i1": 0, "u-i2": 1, "u-x1": 2}}
	e := newEventsEnv(t, Config{PositionPoll: 10 * time.Millisecond})
	e.setLive(t, watchedStore(t, kube, ns, positions))
	for _, id := range []string{"i1", "i2"} {
		e.write(t, history.Record{ID: id, Set: set})
		e.write(t, history.Record{ID: id, Set: set, State: history.StateQueued})
	}
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c, r := dialPath(t, u.Host, "/experiment-sets/"+set+"/events")
	defer c.Close()
	got := map[string][]int32{}
	read := func(n int) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		name := ""
		for seen := 0; seen < n; {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("after %v: %v", got, err)
			}
			line = strings.TrimSpace(line)
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok && name == wire.EventPosition {
				var p wire.Position
				if err := json.Unmarshal([]byte(v), &p); err != nil {
					t.Fatal(err)
				}
				got[p.Experiment] = append(got[p.Experiment], *p.Position)
				seen++
			}
		}
	}
	read(2)
	positions.set("u-i2", 0)
	positions.set("u-i1", 5) // not a real queue's move, but a change all the same
	read(2)
	if want := map[string][]int32{"i1": {0, 5}, "i2": {1, 0}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("positions by item %v, want %v", got, want)
	}
}

// TestPositionLooksPauseWhileAdmitted: once an experiment's stream has
// said Pending and Running it stops looking at the queue, and looks again
// once it says Queued: a Job suspended again by Kueue (evicted) shows no
// position before its record says Queued, then its position again.
func TestPositionLooksPauseWhileAdmitted(t *testing.T) {
	const id, ns = "q2", "exp"
	job, kube, _, live := queuedJob(t, id, ns, 3)
	ctx := context.Background()
	suspend := func(suspended bool) {
		t.Helper()
		job.Spec.Suspend = ptr.To(suspended)
		if _, err := kube.BatchV1().Jobs(ns).Update(ctx, job, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if _, queued := live.QueuePosition(ctx, id); queued == suspended {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the watch did not see the Job suspended=%v", suspended)
			}
		}
	}

	e := newEventsEnv(t, Config{PositionPoll: 10 * time.Millisecond})
	e.setLive(t, live)
	e.write(t, history.Record{ID: id})
	e.write(t, history.Record{ID: id, State: history.StateQueued})
	s := e.open(t, "/experiments/"+id+"/events", nil)
	position := `position {"experiment":"q2","name":"team-a","clusterQueue":"cq","position":%d}`
	s.want(t, id+":Submitted", id+":Queued", fmt.Sprintf(position, 3))

	suspend(false)
	e.write(t, history.Record{ID: id, State: history.StatePending})
	e.write(t, history.Record{ID: id, State: history.StateRunning})
	s.want(t, id+":Pending", id+":Running")
	// Evicted: Kueue's view has it queued again, its record not yet. A
	// stream still looking would send the position within 10 ms. Queued
	// again where it was before: the position is news all the same.
	suspend(true)
	time.Sleep(200 * time.Millisecond)
	e.write(t, history.Record{ID: id, State: history.StateQueued})
	s.want(t, id+":Queued", fmt.Sprintf(position, 3))
	e.write(t, history.Record{ID: id, State: history.StateSucceeded})
	s.want(t, id+":Succeeded")
}
