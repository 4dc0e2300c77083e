package history

// listQuery is one List call turned into SQL.
type listQuery struct {
	sql   string
	args  []any
	limit int
}

// newListQuery checks opts and builds the statement: keyset pagination
// from the cursor in the continue token.
func newListQuery(opts ListOptions, d dialect) (listQuery, error) {
	limit, err := pageSize(opts.Limit)
	if err != nil {
		return listQuery{}, err
	}
	if err := checkStateFilter(opts.State); err != nil {
		return listQuery{}, err
	}
	var args []any
	if opts.Set != "" {
		args = append(args, opts.Set)
	}
	if opts.State != "" {
		args = append(args, opts.State)
	}
	after := opts.Continue != ""
	if after {
		c, err := decodeCursor(opts.Continue)
		if err != nil {
			return listQuery{}, err
		}
		args = append(args, d.timeArg(c.CreatedAt), c.ID)
	}
	// One row more than the page tells whether another page follows.
	args = append(args, limit+1)
	return listQuery{sql: listSQL(opts.State != "", opts.Set != "", after), args: args, limit: limit}, nil
}

// rows is what database/sql's and pgx's query results have in common.
type rows interface {
	row
	Next() bool
	Err() error
}

// read reads the query's rows into its page.
func (q listQuery) read(rs rows) (Page, error) {
	items := make([]Record, 0, q.limit+1)
	for rs.Next() {
		rec, err := scanRecord(rs)
		if err != nil {
			return Page{}, err
		}
		items = append(items, rec)
	}
	if err := rs.Err(); err != nil {
		return Page{}, err
	}
	return q.page(items), nil
}

// page cuts the rows to the limit and makes the token of the next page.
func (q listQuery) page(items []Record) Page {
	if len(items) <= q.limit {
		return Page{Items: items}
	}
	items = items[:q.limit]
	last := items[len(items)-1]
	return Page{Items: items, Continue: cursor{CreatedAt: last.CreatedAt, ID: last.ID}.encode()}
}
