// Package cli is the gmini command: cobra commands over package client,
// with kubectl's conventions (-o json|yaml|wide, a table by default) and
// exit codes scripts can trust. Its streams and environment are passed in,
// so tests run it as a user would without touching the process's own.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/gmini-dev/gmini/apps/backend/client"
	"github.com/gmini-dev/gmini/apps/backend/wire"
)

// Exit codes.
const (
	ExitOK = 0
	// ExitError: the request failed (the backend refused it, or could not
	// be reached).
	ExitError = 1
	// ExitUsage: the command line is wrong.
	ExitUsage = 2
)

// DefaultServer is where `make proxy` serves the backend.
const DefaultServer = "http://127.0.0.1:8080"

type options struct {
	server, token, tokenFile, output string
	timeout                          time.Duration
	stdin                            io.Reader
	stdout                           io.Writer
}

// usageError marks an error of the command line, not of the request.
type usageError struct{ error }

// Main runs the command with args and returns its exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	o := &options{stdin: stdin, stdout: stdout}
	root := &cobra.Command{
		Use:           "gmini",
		Short:         "Submit and follow gmini experiments",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := root.PersistentFlags()
	f.StringVar(&o.server, "server", or(getenv("GMINI_SERVER"), DefaultServer), "the backend's URL (GMINI_SERVER)")
	f.StringVar(&o.token, "token", "", "bearer token for a backend with --auth kubernetes (GMINI_TOKEN); prefer --token-file, which keeps it out of the process list")
	f.StringVar(&o.tokenFile, "token-file", getenv("GMINI_TOKEN_FILE"), "file holding the bearer token (GMINI_TOKEN_FILE)")
	f.StringVarP(&o.output, "output", "o", "", "output format: json, yaml or wide (default: a table)")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on the whole request")
	envToken := getenv("GMINI_TOKEN")
	submitSet := setSubmitCmd(o)
	submitSet.Use = "submit-set -f sweep.yaml [--id SET]"
	submitSet.Short = "Submit an experiment set (the same as set submit)"
	root.AddCommand(submitCmd(o), getCmd(o), listCmd(o), logsCmd(o), watchCmd(o), cancelCmd(o), setCmd(o), submitSet)
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		switch o.output {
		case "", "json", "yaml", "wide":
		default:
			return usageError{fmt.Errorf("--output %q: want json, yaml or wide", o.output)}
		}
		if o.token == "" {
			o.token = envToken
		}
		if o.token == "" && o.tokenFile != "" {
			b, err := os.ReadFile(o.tokenFile)
			if err != nil {
				return usageError{fmt.Errorf("read the token: %w", err)}
			}
			o.token = strings.TrimSpace(string(b))
		}
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "gmini:", err)
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "arg(s)") {
		return ExitUsage
	}
	return ExitError
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (o *options) client() (*client.Client, error) {
	var opts []client.Option
	if o.token != "" {
		opts = append(opts, client.WithToken(o.token))
	}
	c, err := client.New(o.server, opts...)
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// call runs fn with a client and the request's deadline.
func (o *options) call(cmd *cobra.Command, fn func(context.Context, *client.Client) error) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	return fn(ctx, c)
}

func submitCmd(o *options) *cobra.Command {
	var file, queue string
	var notify []string
	cmd := &cobra.Command{
		Use:   "submit -f experiment.json",
		Short: "Submit an experiment: a JSON object with an id (from a file, or - for standard input)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{errors.New("submit needs -f FILE (or -f - for standard input)")}
			}
			var r io.Reader = o.stdin
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return usageError{err}
				}
				defer f.Close()
				r = f
			}
			var exp json.RawMessage
			if err := json.NewDecoder(r).Decode(&exp); err != nil {
				return usageError{fmt.Errorf("read the experiment from %s: %w", file, err)}
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				var opts []client.SubmitOption
				if queue != "" {
					opts = append(opts, client.InQueue(queue))
				}
				if len(notify) > 0 {
					opts = append(opts, client.NotifyAt(notify...))
				}
				sub, err := c.Submit(ctx, exp, opts...)
				if err != nil {
					return err
				}
				return o.print(sub, func(w io.Writer) {
					what := "created"
					if !sub.Created {
						what = "exists"
						if sub.State != "" {
							what += " (" + sub.State + ", from history: nothing ran again)"
						}
					}
					fmt.Fprintf(w, "experiment %s %s: job %s/%s\n", sub.ID, what, sub.Namespace, sub.Job)
				})
			})
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the experiment's JSON (- for standard input)")
	cmd.Flags().StringVar(&queue, "queue", "", "the Kueue queue to wait in (default: the backend's)")
	cmd.Flags().StringArrayVar(&notify, "notify", nil, "a URL to send this experiment's webhooks to (repeatable; its host must be in the backend's allow-list)")
	return cmd
}

func getCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show an experiment's status",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := c.Get(ctx, args[0])
				if err != nil {
					return err
				}
				return o.print(st, func(w io.Writer) { o.table(w, []wire.Status{st}) })
			})
		},
	}
}

func listCmd(o *options) *cobra.Command {
	var lo client.ListOptions
	var all bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List experiments, newest first with history",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				page := wire.Page{Items: []wire.Status{}}
				var err error
				if all {
					err = c.ListAll(ctx, lo, func(s wire.Status) bool { page.Items = append(page.Items, s); return true })
				} else {
					page, err = c.List(ctx, lo)
				}
				if err != nil {
					return err
				}
				return o.print(page, func(w io.Writer) {
					o.table(w, page.Items)
					if page.Continue != "" {
						fmt.Fprintf(w, "(more: --continue %s)\n", page.Continue)
					}
				})
			})
		},
	}
	pageFlags(cmd, &lo, &all, "only experiments in this state")
	return cmd
}

// pageFlags are the flags of a command that reads pages: --state,
// --limit, --continue and -A.
func pageFlags(cmd *cobra.Command, lo *client.ListOptions, all *bool, stateHelp string) {
	cmd.Flags().StringVar(&lo.State, "state", "", stateHelp)
	cmd.Flags().IntVar(&lo.Limit, "limit", 0, "page size (default: the backend's)")
	cmd.Flags().StringVar(&lo.Continue, "continue", "", "the previous page's continue token")
	cmd.Flags().BoolVarP(all, "all", "A", false, "read every page")
}

func logsCmd(o *options) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Print the runner's output; with -f, follow it until the experiment ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if follow {
				return o.follow(cmd, args[0])
			}
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				return c.Logs(ctx, args[0], o.stdout)
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "stream the output as it is written until the experiment ends, resuming after a dropped connection (not bound by --timeout; Ctrl-C stops)")
	return cmd
}

// follow streams an experiment's output until it ends. It is bound by
// the user, not --timeout: an experiment may run for hours.
func (o *options) follow(cmd *cobra.Command, id string) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	err = c.FollowLogsSSE(cmd.Context(), id, "", func(ev client.LogEvent) error {
		var err error
		switch ev.Type {
		case client.EventOutput:
			_, err = o.stdout.Write(ev.Data)
		case client.EventAttempt:
			_, err = fmt.Fprintf(o.stdout, "%s\n", ev.Data)
		}
		return err
	})
	if err != nil && cmd.Context().Err() != nil {
		return nil // Ctrl-C: the user stopped following
	}
	return err
}

func cancelCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel an experiment: its Job and pods go, its record stays",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.call(cmd, func(ctx context.Context, c *client.Client) error {
				r, err := c.Cancel(ctx, args[0])
				if err != nil {
					return err
				}
				return o.print(r, func(w io.Writer) {
					if r.Deleted {
						fmt.Fprintf(w, "experiment %s cancelled: job %s deleted\n", r.ID, r.Job)
					} else {
						fmt.Fprintf(w, "experiment %s: nothing to cancel (%s)\n", r.ID, r.State)
					}
				})
			})
		},
	}
}

// print writes v as -o asks: JSON, YAML, or the human form.
func (o *options) print(v any, human func(io.Writer)) error {
	switch o.output {
	case "json":
		enc := json.NewEncoder(o.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = o.stdout.Write(b)
		return err
	}
	human(o.stdout)
	return nil
}

// table prints statuses as kubectl does: aligned columns, more with -o wide.
func (o *options) table(w io.Writer, items []wire.Status) {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	defer tw.Flush()
	wide := o.output == "wide"
	if wide {
		fmt.Fprintln(tw, "ID\tSTATE\tAGE\tJOB\tREASON\tEXIT\tSUBMITTED-BY\tSOURCE\tQUEUE\tPOSITION")
	} else {
		fmt.Fprintln(tw, "ID\tSTATE\tAGE\tJOB")
	}
	for _, s := range items {
		age := "-"
		if !s.CreatedAt.IsZero() {
			age = time.Since(s.CreatedAt).Round(time.Second).String()
		}
		if wide {
			exit := "-"
			if s.ExitCode != nil {
				exit = fmt.Sprint(*s.ExitCode)
			}
			queue, position := queueColumns(s.Queue)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.State, age, s.Job, or(s.Reason, "-"), exit, or(s.SubmittedBy, "-"), s.Source, queue, position)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.ID, s.State, age, s.Job)
		}
	}
}
