package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/jobspec"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// setTimeout is --timeout's default for set submit and cancel: a set of a
// thousand takes the backend seconds to a minute, one item at a time
// against the API server.
const setTimeout = 5 * time.Minute

func setCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "set",
		Short: "Submit, follow and cancel experiment sets: many experiments as one, under a set ID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{errors.New("set needs a command: submit, get or cancel")}
		},
	}
	cmd.AddCommand(setSubmitCmd(o), setGetCmd(o), setCancelCmd(o))
	return cmd
}

func setSubmitCmd(o *options) *cobra.Command {
	var file, id string
	cmd := &cobra.Command{
		Use:   "submit -f sweep.json [--id SET]",
		Short: "Submit a set: {\"id\": SET, \"items\": [...]} in JSON or YAML, or with --id a list or JSON lines of items",
		Long: `Submit an experiment set in one request. The file (- for standard input) is either
a set, {"id": "<set id>", "items": [<item>, ...]}, or, with --id, a JSON array of items
or one item per line (JSON lines); the same in YAML (a sweep.yaml with id: and items:). An item is what POST /experiment takes,
{"experiment": {"id": ...}} (with an optional "queue"), or just the experiment,
{"id": ...}, as gmini submit takes it. Every item is answered; the command exits 1
when any item was neither created nor existing. Sending the same set again creates
nothing twice.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{errors.New("set submit needs -f FILE (or -f - for standard input)")}
			}
			data, err := o.readFile(file)
			if err != nil {
				return usageError{err}
			}
			set, err := parseSetFile(data, id)
			if err != nil {
				return usageError{fmt.Errorf("read the set from %s: %w", file, err)}
			}
			o.longer(cmd, setTimeout)
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				sub, err := c.SubmitSet(ctx, set)
				if err != nil {
					return err
				}
				if err := o.print(sub, func(w io.Writer) { o.setItems(w, sub) }); err != nil {
					return err
				}
				if n := sub.Outcomes.Failed(); n > 0 {
					return fmt.Errorf("%d of the %d items of set %s failed", n, len(sub.Items), sub.ID)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the set, or its items (- for standard input)")
	cmd.Flags().StringVar(&id, "id", "", "the set's ID, for a file of items (a label value: up to 63 letters, digits, '.', '_', '-')")
	return cmd
}

func (o *options) readFile(file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(o.stdin)
	}
	return os.ReadFile(file)
}

// longer raises the request's timeout to d unless --timeout was given.
func (o *options) longer(cmd *cobra.Command, d time.Duration) {
	if !cmd.Flags().Changed("timeout") && o.timeout < d {
		o.timeout = d
	}
}

// parseSetFile reads a set ({"id", "items"}), a JSON array of items or a
// stream of them (JSON lines), or the same in YAML; id, when given, names the set (and must
// agree with a set's own).
func parseSetFile(data []byte, id string) (wire.SetRequest, error) {
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] != '{' && t[0] != '[' {
		// Not JSON: YAML, as a sweep is often written (a set, or a list
		// of items).
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			return wire.SetRequest{}, fmt.Errorf("neither JSON nor YAML: %w", err)
		}
		data = j
	}
	var values []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var v json.RawMessage
		err := dec.Decode(&v)
		if err == io.EOF {
			break
		}
		if err != nil {
			return wire.SetRequest{}, fmt.Errorf("value %d: %w", len(values)+1, err)
		}
		values = append(values, v)
	}
	if len(values) == 0 {
		return wire.SetRequest{}, errors.New("no items: give a set, a JSON array of items or one item per line")
	}
	var set wire.SetRequest
	switch {
	case len(values) == 1 && isSet(values[0]):
		var env struct {
			ID    string            `json:"id"`
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(values[0], &env); err != nil {
			return wire.SetRequest{}, err
		}
		if id != "" && env.ID != "" && id != env.ID {
			return wire.SetRequest{}, fmt.Errorf("--id %q differs from the set's own %q", id, env.ID)
		}
		set = wire.SetRequest{ID: env.ID, Items: env.Items}
		if id != "" {
			set.ID = id
		}
	case len(values) == 1 && bytes.HasPrefix(bytes.TrimSpace(values[0]), []byte("[")):
		if err := json.Unmarshal(values[0], &set.Items); err != nil {
			return wire.SetRequest{}, err
		}
		set.ID = id
	default:
		set = wire.SetRequest{ID: id, Items: values}
	}
	if set.ID == "" {
		return wire.SetRequest{}, errors.New("no set ID: give --id, or a set {\"id\": ..., \"items\": [...]}")
	}
	if err := jobspec.ValidateSetID(set.ID); err != nil {
		return wire.SetRequest{}, err
	}
	switch n := len(set.Items); {
	case n == 0:
		return wire.SetRequest{}, errors.New("the set has no items")
	case n > wire.MaxSetItems:
		return wire.SetRequest{}, fmt.Errorf("%d items: a set holds at most %d; split the file", n, wire.MaxSetItems)
	}
	for i, it := range set.Items {
		wrapped, err := asItem(it)
		if err != nil {
			return wire.SetRequest{}, fmt.Errorf("item %d: %w", i, err)
		}
		set.Items[i] = wrapped
	}
	return set, nil
}

// isSet reports whether v is a set's envelope: an object with "items".
func isSet(v json.RawMessage) bool {
	var obj map[string]json.RawMessage
	if json.Unmarshal(v, &obj) != nil {
		return false
	}
	_, ok := obj["items"]
	return ok
}

// asItem keeps an item ({"experiment": ...}) as it is and wraps a bare
// experiment ({"id": ...}) into one, as gmini submit does.
func asItem(v json.RawMessage) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err != nil {
		return nil, errors.New("not a JSON object: an item is {\"experiment\": {\"id\": ...}} or an experiment {\"id\": ...}")
	}
	if _, ok := obj["experiment"]; ok {
		return v, nil
	}
	return json.Marshal(map[string]json.RawMessage{"experiment": v})
}

// setItems prints a submitted set: a summary, then the items that failed
// (every item with -o wide).
func (o *options) setItems(w io.Writer, sub wire.SetSubmission) {
	oc := sub.Outcomes
	fmt.Fprintf(w, "set %s: %d created, %d existing, %d conflict, %d invalid, %d error\n",
		sub.ID, oc.Created, oc.Existing, oc.Conflict, oc.Invalid, oc.Error)
	wide := o.output == "wide"
	if !wide && oc.Failed() == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	defer tw.Flush()
	if wide {
		fmt.Fprintln(tw, "INDEX\tID\tOUTCOME\tCODE\tJOB\tSTATE\tMESSAGE")
	} else {
		fmt.Fprintln(tw, "INDEX\tID\tOUTCOME\tCODE\tMESSAGE")
	}
	for _, it := range sub.Items {
		switch {
		case wide:
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", it.Index, or(it.ID, "-"), it.Outcome, it.Code, or(it.Job, "-"), or(it.State, "-"), or(oneLine(it.Message), "-"))
		case it.Failed():
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", it.Index, or(it.ID, "-"), it.Outcome, it.Code, oneLine(it.Message))
		}
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func setGetCmd(o *options) *cobra.Command {
	var lo client.ListOptions
	var all bool
	cmd := &cobra.Command{
		Use:   "get SET",
		Short: "Show a set: its experiments counted by state, and the experiments",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				var set wire.Set
				var err error
				if all {
					set, err = c.GetSetAll(ctx, args[0], lo)
				} else {
					set, err = c.GetSet(ctx, args[0], lo)
				}
				if err != nil {
					return err
				}
				return o.print(set, func(w io.Writer) {
					fmt.Fprintf(w, "set %s: %d experiments, %s\n", set.ID, set.Total, countsLine(set.Counts))
					o.table(w, set.Items)
					if set.Continue != "" {
						fmt.Fprintf(w, "(more: --continue %s)\n", set.Continue)
					}
				})
			})
		},
	}
	pageFlags(cmd, &lo, &all, "only experiments in this state (the counts are the whole set's)")
	return cmd
}

// countsLine is "3 Running, 7 Succeeded": the states that have any, in
// the vocabulary's order as the backend lists them.
func countsLine(counts map[string]int) string {
	var parts []string
	for _, st := range stateOrder {
		if n := counts[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	var others []string // states newer than this command
	for st, n := range counts {
		if n > 0 && !slices.Contains(stateOrder, st) {
			others = append(others, fmt.Sprintf("%d %s", n, st))
		}
	}
	slices.Sort(others)
	parts = append(parts, others...)
	if len(parts) == 0 {
		return "none in any state"
	}
	return strings.Join(parts, ", ")
}

// stateOrder lists the states from waiting to done. The command does not
// import the backend's internal vocabulary; countsLine still prints any
// other state it is sent.
var stateOrder = []string{"Submitted", "Queued", "Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled", "Deleting"}

func setCancelCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel SET",
		Short: "Cancel every experiment of a set that has not finished",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.longer(cmd, setTimeout)
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.CancelSet(ctx, args[0])
				if err != nil {
					return err
				}
				err = o.print(r, func(w io.Writer) {
					fmt.Fprintf(w, "set %s: %d cancelled, %d finished already, %d failed (of %d)\n", r.ID, r.Cancelled, r.Finished, r.Failed, r.Total)
					for _, e := range r.Errors {
						fmt.Fprintf(w, "  %s: %d %s\n", e.ID, e.Code, oneLine(e.Message))
					}
				})
				if err == nil && r.Failed > 0 {
					err = fmt.Errorf("%d experiments of set %s could not be cancelled now; run the command again", r.Failed, r.ID)
				}
				return err
			})
		},
	}
}
