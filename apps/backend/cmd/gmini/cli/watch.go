package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/internal/state"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

func watchCmd(o *options) *cobra.Command {
	var set string
	var all bool
	var f client.EventFilter
	var after int64
	cmd := &cobra.Command{
		Use:   "watch (ID | --set SET | --all)",
		Short: "Print each change of state as it happens, until the experiment or set ends",
		Long: `Print each change of an experiment's state as the backend stores it (GET
/experiments/{id}/events), of a set's items (--set, GET /experiment-sets/{id}/events),
or of every experiment (--all, GET /events, with --state, --submitter and --set as
filters) until Ctrl-C. A dropped connection is resumed where it was, so no change is
printed twice or missed. Not bound by --timeout.

While a watched experiment (or an item of a watched set) is Queued, the table also
says where it waits in its LocalQueue (0 is admitted next), when first known and each
time it changes; -o json and yaml print the changes of state only.

Exit code: 0 when the experiment (every item of the set) Succeeded, 1 when it
Failed or was Cancelled, or the watch failed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case all && len(args) == 1, !all && set != "" && len(args) == 1:
				return usageError{errors.New("watch takes an ID, --set or --all, one of them")}
			case !all && set == "" && len(args) == 0:
				return usageError{errors.New("watch needs an experiment ID, --set SET or --all")}
			case !all && (f.State != "" || f.Submitter != ""):
				return usageError{errors.New("--state and --submitter filter --all only")}
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			print, printPosition := o.eventPrinters()
			ctx := cmd.Context()
			var done wire.EventsDone
			switch {
			case all:
				f.Set = set
				err = c.Events(ctx, f, after, print)
			case set != "":
				done, err = c.WatchSet(ctx, set, after, print, client.OnPosition(printPosition))
			default:
				done, err = c.WatchExperiment(ctx, args[0], after, print, client.OnPosition(printPosition))
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil // Ctrl-C: the user stopped watching
				}
				return err
			}
			return o.ended(done)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&set, "set", "", "watch the items of this experiment set (with --all: keep only them)")
	fl.BoolVar(&all, "all", false, "watch every experiment, from now on, until Ctrl-C")
	fl.StringVar(&f.State, "state", "", "with --all: only changes to this state ("+strings.Join(state.All(), ", ")+")")
	fl.StringVar(&f.Submitter, "submitter", "", "with --all: only the experiments of this submitter")
	fl.Int64Var(&after, "after", client.FromNow, "start after the change with this seq (the first column of -o wide; 0: from the first one stored); default: for --all from now on, otherwise from the experiment's or set's first change")
	return cmd
}

// eventPrinters print one change a line: a table row, or with -o json or
// yaml one object per change (JSON lines; YAML documents); and, in the
// table form only, a row for each queue position of a watched experiment
// (its QUEUE and POSITION cells as get shows them). JSON and YAML lines
// stay one change of state each. The table's header comes before
// whichever row is first.
func (o *options) eventPrinters() (func(wire.Event) error, func(wire.Position) error) {
	table := o.output == "" || o.output == "wide"
	header := table
	printHeader := func() {
		if header {
			header = false
			if o.output == "wide" {
				fmt.Fprintln(o.stdout, "SEQ\tTIME\tEXPERIMENT\tSTATE\tEXIT\tSET\tSUBMITTER\tREASON\tMESSAGE")
			} else {
				fmt.Fprintln(o.stdout, "TIME\tEXPERIMENT\tSTATE\tREASON")
			}
		}
	}
	position := func(p wire.Position) error {
		if !table {
			return nil
		}
		printHeader()
		queue, pos := queueColumns(&p.Queue)
		var err error
		if o.output == "wide" {
			_, err = fmt.Fprintf(o.stdout, "\t%s\t%s\t%s\t\t\t\tposition %s in %s\t\n", time.Now().Format(time.RFC3339), p.Experiment, state.Queued, pos, queue)
		} else {
			_, err = fmt.Fprintf(o.stdout, "%s\t%s\t%s\tposition %s in %s\n", time.Now().Format("15:04:05"), p.Experiment, state.Queued, pos, queue)
		}
		return err
	}
	return func(e wire.Event) error {
		switch o.output {
		case "json":
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(o.stdout, "%s\n", b)
			return err
		case "yaml":
			b, err := yaml.Marshal(e)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(o.stdout, "---\n%s", b)
			return err
		}
		printHeader()
		exit := ""
		if e.ExitCode != nil {
			exit = fmt.Sprint(*e.ExitCode)
		}
		var err error
		if o.output == "wide" {
			_, err = fmt.Fprintf(o.stdout, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Local().Format(time.RFC3339), e.Experiment,
				e.State, exit, e.Set, e.Submitter, e.Reason, oneLine(e.Message))
		} else {
			_, err = fmt.Fprintf(o.stdout, "%s\t%s\t%s\t%s\n", e.Time.Local().Format("15:04:05"), e.Experiment, e.State, e.Reason)
		}
		return err
	}, position
}

// ended turns how a watch ended into the exit code: an error unless it
// Succeeded.
func (o *options) ended(done wire.EventsDone) error {
	if done.Counts != nil {
		var bad []string
		for st, n := range done.Counts {
			if st != state.Succeeded && n > 0 {
				bad = append(bad, fmt.Sprintf("%d %s", n, st))
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			return fmt.Errorf("the set ended with %s", strings.Join(bad, ", "))
		}
		return nil
	}
	if done.State != "" && done.State != state.Succeeded {
		return fmt.Errorf("the experiment ended %s", done.State)
	}
	return nil
}
