package experiment

import (
	"strings"
	"testing"
)

func TestDecodeQueue(t *testing.T) {
	for _, tt := range []struct {
		name, body, wantQueue, wantErr string
	}{
		{name: "no queue", body: `{"experiment": {"id": "e1"}}`},
		{name: "a queue", body: `{"experiment": {"id": "e1"}, "queue": "team-a"}`, wantQueue: "team-a"},
		{name: "queue first", body: `{"queue": "q1", "experiment": {"id": "e1"}}`, wantQueue: "q1"},
		{name: "63 characters", body: `{"experiment": {"id": "e1"}, "queue": "` + strings.Repeat("q", 63) + `"}`, wantQueue: strings.Repeat("q", 63)},
		{name: "64 characters", body: `{"experiment": {"id": "e1"}, "queue": "` + strings.Repeat("q", 64) + `"}`, wantErr: "not a valid queue name"},
		{name: "empty", body: `{"experiment": {"id": "e1"}, "queue": ""}`, wantErr: `"queue" is empty`},
		{name: "null", body: `{"experiment": {"id": "e1"}, "queue": null}`, wantErr: `"queue" must be a string, got null`},
		{name: "number", body: `{"experiment": {"id": "e1"}, "queue": 1}`, wantErr: `"queue" must be a string, got a number`},
		{name: "upper case", body: `{"experiment": {"id": "e1"}, "queue": "Team-A"}`, wantErr: `"queue" "Team-A" is not a valid queue name`},
		{name: "dot", body: `{"experiment": {"id": "e1"}, "queue": "team.a"}`, wantErr: "not a valid queue name"},
		{name: "leading dash", body: `{"experiment": {"id": "e1"}, "queue": "-a"}`, wantErr: "not a valid queue name"},
		{name: "duplicated", body: `{"experiment": {"id": "e1"}, "queue": "a", "queue": "b"}`, wantErr: `duplicated key "queue"`},
		{name: "inside the experiment it is the runner's", body: `{"experiment": {"id": "e1", "queue": "Not A Label"}}`},
		{name: "another unknown field", body: `{"experiment": {"id": "e1"}, "queue": "a", "priority": 1}`, wantErr: `unknown field "priority": the body holds only "experiment", "queue" and "notify"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(strings.NewReader(tt.body))
			if tt.wantErr != "" {
				if !isInputError(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode = %+v, %v; want an Invalid error saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got.Queue != tt.wantQueue {
				t.Fatalf("Decode = queue %q, %v; want %q", got.Queue, err, tt.wantQueue)
			}
		})
	}
}

// The queue is where the experiment waits, not what it is: the runner
// does not get it, and the hash that tells a retry from another
// experiment ignores it.
func TestQueueIsNotPartOfTheExperiment(t *testing.T) {
	a, err := Decode(strings.NewReader(`{"experiment": {"id": "e1", "k": 1}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Decode(strings.NewReader(`{"queue": "team-b", "experiment": {"k": 1, "id": "e1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Body) != string(b.Body) || a.Hash != b.Hash {
		t.Errorf("the queue changed the body or hash: %s %s vs %s %s", a.Body, a.Hash, b.Body, b.Hash)
	}
	if strings.Contains(string(b.Body), "team-b") {
		t.Errorf("the runner's body carries the queue: %s", b.Body)
	}
}
