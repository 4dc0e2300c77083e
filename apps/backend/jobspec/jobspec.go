// Package jobspec is what every program that touches gmini's Jobs agrees on:
// the labels and annotations that mark a Job as an experiment's, the Job name
// derived from an experiment ID, which container is the runner, and the Job
// made from the template. It is a leaf package (Kubernetes API types and the
// standard library only) so the test suites and the benchmark import it
// instead of copying it.
package jobspec

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations that mark a Job as gmini's. The ID is an
// annotation because label values cannot hold every valid ID (length, dots
// at the ends); the Job name, derived from it, is the lookup key.
const (
	LabelApp           = "app"
	LabelAppValue      = "gmini"
	LabelManagedBy     = "app.kubernetes.io/managed-by"
	LabelManagedByName = "gmini-backend"
	AnnotationID       = "gmini.dev/experiment-id"
	AnnotationHash     = "gmini.dev/experiment-sha256"

	// ManagedSelector selects every Job the backend created. It is a
	// coarse filter for list calls; Owns decides.
	ManagedSelector = LabelManagedBy + "=" + LabelManagedByName

	// RunnerContainer is the container that receives the experiment.
	RunnerContainer = "runner"

	// FinalizerHistory holds an experiment's Job, and with it its pods and
	// their output, until the backend has stored the experiment's record.
	FinalizerHistory = "gmini.dev/history"
	// AnnotationTTL keeps the template's ttlSecondsAfterFinished while
	// history holds the Job. The TTL starts once the record is stored
	// (ReleasePatch), not when the Job finishes: a backend that is down
	// then still finds the pods, and their logs, when it comes back.
	AnnotationTTL = "gmini.dev/ttl-seconds-after-record"
	// LabelRecorded marks a Job whose record is stored (ReleasePatch sets
	// it). The recorder watches RecordingSelector, so a recorded Job leaves
	// its cache while it waits for its TTL (an hour in prod): the cache
	// holds the experiments still to record, not every Job in the namespace.
	LabelRecorded = "gmini.dev/recorded"
	// RecordingSelector selects the Jobs the recorder still has to record.
	RecordingSelector = ManagedSelector + ",!" + LabelRecorded
	// AnnotationSubmitter names who submitted the experiment, as the API
	// server authenticated them.
	AnnotationSubmitter = "gmini.dev/submitted-by"
	// AnnotationSubmittedAt is when the experiment was submitted (RFC 3339,
	// microseconds): with history, the claim's time, so that its status
	// reads the same from the Job and from the record.
	AnnotationSubmittedAt = "gmini.dev/submitted-at"
	// AnnotationHeldForSubmit marks a Job the backend created suspended,
	// to check that its experiment may still run before any pod starts
	// (HoldForSubmit); its value is the template's own spec.suspend, which
	// ResumePatch restores.
	AnnotationHeldForSubmit = "gmini.dev/held-for-submit"

	// LabelSet names the experiment set (POST /experiment-sets) a Job was
	// submitted in, so a set's Jobs are found by label selector
	// (SetSelector). A label, unlike the ID, because set IDs are
	// restricted to label values.
	LabelSet = "gmini.dev/set"

	// MaxIDLength bounds experiment IDs. IDs come from a document store; 128
	// leaves room for any store's keys while keeping annotations small.
	MaxIDLength = 128
)

// ValidateID checks that id can name an experiment: 1 to MaxIDLength
// characters from [A-Za-z0-9._-], starting with a letter or digit. Mixed case
// is allowed: IDs come from a document store that generates them so.
func ValidateID(id string) error {
	switch {
	case id == "":
		return errors.New(`"experiment.id" is empty`)
	case len(id) > MaxIDLength:
		return fmt.Errorf(`"experiment.id" is %d characters long; the limit is %d`, len(id), MaxIDLength)
	case !isAlnum(id[0]):
		return fmt.Errorf(`"experiment.id" %q must start with a letter or a digit`, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			r, _ := utf8.DecodeRuneInString(id[i:])
			return fmt.Errorf(`"experiment.id" has the character %q at byte %d; allowed are letters, digits, '.', '_' and '-'`, r, i)
		}
	}
	return nil
}

// MaxSetIDLength bounds set IDs: a set ID is a label value (LabelSet).
const MaxSetIDLength = 63

// ValidateSetID checks that id can name an experiment set: a non-empty
// label value, 1 to MaxSetIDLength characters from [A-Za-z0-9._-],
// starting and ending with a letter or digit.
func ValidateSetID(id string) error {
	switch {
	case id == "":
		return errors.New(`the set "id" is empty`)
	case len(id) > MaxSetIDLength:
		return fmt.Errorf(`the set "id" is %d characters long; the limit is %d (it is a label value)`, len(id), MaxSetIDLength)
	case !isAlnum(id[0]) || !isAlnum(id[len(id)-1]):
		return fmt.Errorf(`the set "id" %q must start and end with a letter or a digit`, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			r, _ := utf8.DecodeRuneInString(id[i:])
			return fmt.Errorf(`the set "id" has the character %q at byte %d; allowed are letters, digits, '.', '_' and '-'`, r, i)
		}
	}
	return nil
}

// SetSelector selects the Jobs of experiment set id (ValidateSetID).
func SetSelector(id string) string {
	return ManagedSelector + "," + LabelSet + "=" + id
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// jobNamePrefix and hashLen shape Job names: "exp-" + readable part + "-" +
// hash. A Job's name is copied into a label, so it must be at most 63
// characters.
const (
	jobNamePrefix = "exp-"
	maxJobName    = 63
	hashLen       = 10
)

// JobName maps an experiment ID onto a DNS-1123 label of at most 63
// characters. The readable part is the ID lower-cased with other characters
// turned into '-', so people can recognise their Job; the suffix is a hash of
// the exact ID, so IDs that differ only in case or punctuation
// ("aB3" and "ab3", "a.b" and "a_b") still get different names. Two IDs share
// a name only if 50 bits of SHA-256 collide; the backend still checks the ID
// annotation of an existing Job before treating it as the same experiment.
func JobName(id string) string {
	sum := sha256.Sum256([]byte(id))
	suffix := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))[:hashLen]

	var b strings.Builder
	dash := true // no leading '-' and no runs of '-'
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		default:
			c = '-'
		}
		if c == '-' && dash {
			continue
		}
		dash = c == '-'
		b.WriteByte(c)
	}
	readable := b.String()
	if room := maxJobName - len(jobNamePrefix) - 1 - hashLen; len(readable) > room {
		readable = readable[:room]
	}
	readable = strings.TrimRight(readable, "-")
	if readable == "" {
		return jobNamePrefix + suffix
	}
	return jobNamePrefix + readable + "-" + suffix
}

// Owns reports whether job is an experiment's Job, and whose: it carries the
// managed-by label, its ID annotation is a valid ID, and its name is the one
// derived from that ID. Every reader (get, list, delete, logs) uses this one
// rule, so an object a person labelled or annotated by hand is never half
// an experiment: listed but not found, or found under another ID.
func Owns(job *batchv1.Job) (id string, ok bool) {
	if job == nil || job.Labels[LabelManagedBy] != LabelManagedByName {
		return "", false
	}
	id = job.Annotations[AnnotationID]
	if ValidateID(id) != nil || JobName(id) != job.Name {
		return "", false
	}
	return id, true
}

// RunnerIndex returns the index of the runner in spec.Containers: the
// container named RunnerContainer, else the only container. The spawner,
// the template check and the log reader all use it, so they agree on which
// container gets the experiment and prints its output.
func RunnerIndex(spec *corev1.PodSpec) (int, error) {
	for i := range spec.Containers {
		if spec.Containers[i].Name == RunnerContainer {
			return i, nil
		}
	}
	switch len(spec.Containers) {
	case 0:
		return -1, errors.New("the pod template has no containers")
	case 1:
		return 0, nil
	}
	names := make([]string, len(spec.Containers))
	for i := range spec.Containers {
		names[i] = spec.Containers[i].Name
	}
	return -1, fmt.Errorf("no container named %q among %d containers (%s): name the one that runs the experiment %q",
		RunnerContainer, len(names), strings.Join(names, ", "), RunnerContainer)
}

// CheckTemplate reports why Build could not use tmpl: no runner container,
// or a runner that sets its own args, which the experiment would silently
// replace.
func CheckTemplate(tmpl *batchv1.JobTemplateSpec) error {
	if tmpl == nil {
		return errors.New("no job template")
	}
	i, err := RunnerIndex(&tmpl.Spec.Template.Spec)
	if err != nil {
		return err
	}
	if c := tmpl.Spec.Template.Spec.Containers[i]; len(c.Args) > 0 {
		return fmt.Errorf("container %q sets args %q, which the experiment replaces; use command for fixed arguments", c.Name, c.Args)
	}
	return nil
}

// Build makes the Job of experiment id from the template: the template's
// metadata and spec are kept; gmini adds the name, its labels, the ID and
// hash annotations and the runner's single argument, body. tmpl is not
// changed (it may belong to an informer's cache).
func Build(tmpl *batchv1.JobTemplateSpec, namespace, id, hash string, body []byte) (*batchv1.Job, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if err := CheckTemplate(tmpl); err != nil {
		return nil, err
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:        JobName(id),
			Namespace:   namespace,
			Labels:      maps.Clone(tmpl.Labels),
			Annotations: maps.Clone(tmpl.Annotations),
		},
		Spec: *tmpl.Spec.DeepCopy(),
	}
	if job.Labels == nil {
		job.Labels = map[string]string{}
	}
	job.Labels[LabelApp] = LabelAppValue
	job.Labels[LabelManagedBy] = LabelManagedByName
	if job.Annotations == nil {
		job.Annotations = map[string]string{}
	}
	job.Annotations[AnnotationID] = id
	job.Annotations[AnnotationHash] = hash

	pod := &job.Spec.Template
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[LabelApp] = LabelAppValue
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationID] = id

	// CheckTemplate found the runner already.
	idx, _ := RunnerIndex(&pod.Spec)
	// The experiment travels as one process argument, as in the tutorial
	// (`app.py '<json>'`); the request size limit keeps it far below
	// Linux's 128 KiB cap on a single argument.
	pod.Spec.Containers[idx].Args = []string{string(body)}
	return job, nil
}

// HoldForHistory makes job wait for its record: it adds FinalizerHistory
// and moves the TTL into AnnotationTTL (empty when the template has none),
// for ReleasePatch to restore.
func HoldForHistory(job *batchv1.Job) {
	if !slices.Contains(job.Finalizers, FinalizerHistory) {
		job.Finalizers = append(job.Finalizers, FinalizerHistory)
	}
	if job.Annotations == nil {
		job.Annotations = map[string]string{}
	}
	if _, done := job.Annotations[AnnotationTTL]; done {
		return
	}
	job.Annotations[AnnotationTTL] = ""
	if ttl := job.Spec.TTLSecondsAfterFinished; ttl != nil {
		job.Annotations[AnnotationTTL] = strconv.Itoa(int(*ttl))
		job.Spec.TTLSecondsAfterFinished = nil
	}
}

// SubmittedAtFormat is AnnotationSubmittedAt's time format: microseconds,
// what the history databases keep.
const SubmittedAtFormat = "2006-01-02T15:04:05.000000Z07:00"

// SubmittedAt is when job's experiment was submitted: AnnotationSubmittedAt,
// else the Job's creation (a Job made before the annotation existed).
func SubmittedAt(job *batchv1.Job) time.Time {
	if t, err := time.Parse(SubmittedAtFormat, job.Annotations[AnnotationSubmittedAt]); err == nil {
		return t.UTC()
	}
	return job.CreationTimestamp.UTC()
}

// HoldForSubmit makes job start suspended and marks it so, keeping the
// template's own suspend for ResumePatch. A Job under a queue (SetQueue)
// waits under HoldQueue instead, so Kueue cannot admit it meanwhile.
func HoldForSubmit(job *batchv1.Job) {
	if job.Annotations == nil {
		job.Annotations = map[string]string{}
	}
	if _, held := job.Annotations[AnnotationHeldForSubmit]; held {
		return
	}
	job.Annotations[AnnotationHeldForSubmit] = strconv.FormatBool(job.Spec.Suspend != nil && *job.Spec.Suspend)
	if q := job.Labels[LabelQueue]; q != "" {
		job.Annotations[AnnotationHeldQueue] = q
		job.Labels[LabelQueue] = HoldQueue
	}
	suspend := true
	job.Spec.Suspend = &suspend
}

// HeldForSubmit reports whether job waits for HoldForSubmit's check.
func HeldForSubmit(job *batchv1.Job) bool {
	_, held := job.Annotations[AnnotationHeldForSubmit]
	return held
}

// ResumePatch is the strategic merge patch that starts a Job HoldForSubmit
// held: the mark removed, the template's suspend restored. It carries the
// Job's UID, so the API server applies it to that very Job only. A Job
// under a queue gets its queue back and stays suspended: Kueue starts it
// when it admits it, and would suspend again a Job it has not admitted.
func ResumePatch(job *batchv1.Job) ([]byte, error) {
	if q, queued := job.Annotations[AnnotationHeldQueue]; queued {
		if q == "" || q == HoldQueue {
			return nil, fmt.Errorf("job %s: annotation %s=%q names no queue", job.Name, AnnotationHeldQueue, q)
		}
		return json.Marshal(map[string]any{
			"metadata": map[string]any{
				"uid":         job.UID,
				"labels":      map[string]any{LabelQueue: q},
				"annotations": map[string]any{AnnotationHeldForSubmit: nil, AnnotationHeldQueue: nil},
			},
		})
	}
	suspend, err := strconv.ParseBool(job.Annotations[AnnotationHeldForSubmit])
	if err != nil {
		return nil, fmt.Errorf("job %s: annotation %s=%q is not true or false", job.Name, AnnotationHeldForSubmit, job.Annotations[AnnotationHeldForSubmit])
	}
	return json.Marshal(map[string]any{
		"metadata": map[string]any{
			"uid":         job.UID,
			"annotations": map[string]any{AnnotationHeldForSubmit: nil},
		},
		"spec": map[string]any{"suspend": suspend},
	})
}

// Held reports whether job still waits for its record.
func Held(job *batchv1.Job) bool { return slices.Contains(job.Finalizers, FinalizerHistory) }

// Released reports whether job's record is stored and the Job let go
// (ReleasePatch's label). A Job whose finalizer was removed by hand is not:
// its record is still to be stored.
func Released(job *batchv1.Job) bool { return job.Labels[LabelRecorded] == "true" }

// ReleasePatch is the strategic merge patch that lets a recorded Job go:
// FinalizerHistory removed, LabelRecorded set and, unless the Job is being deleted anyway, the
// template's TTL restored, so the TTL controller removes it as it would
// have without history.
func ReleasePatch(job *batchv1.Job) ([]byte, error) {
	patch := map[string]any{
		"metadata": map[string]any{
			"$deleteFromPrimitiveList/finalizers": []string{FinalizerHistory},
			"labels":                              map[string]string{LabelRecorded: "true"},
		},
	}
	if v := job.Annotations[AnnotationTTL]; v != "" && job.DeletionTimestamp == nil && job.Spec.TTLSecondsAfterFinished == nil {
		ttl, err := strconv.ParseInt(v, 10, 32)
		if err != nil || ttl < 0 {
			return nil, fmt.Errorf("job %s: annotation %s=%q is not a TTL in seconds", job.Name, AnnotationTTL, v)
		}
		patch["spec"] = map[string]any{"ttlSecondsAfterFinished": ttl}
	}
	return json.Marshal(patch)
}
