package ui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"time"

	"github.com/gmini-dev/gmini/apps/backend/wire"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// pages are the templates by page name, each with the layout.
var pages = map[string]*template.Template{}

// assetVersions are the embedded assets' content hashes: their URLs carry
// them (?v=), so a browser may cache an asset for good and still gets the
// next build's.
var assetVersions = map[string]string{}

func init() {
	entries, err := fs.ReadDir(staticFiles, "static")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		b, err := staticFiles.ReadFile("static/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		assetVersions[e.Name()] = hex.EncodeToString(sum[:6])
	}
	funcs := template.FuncMap{
		"asset":    assetURL,
		"time":     formatTime,
		"duration": duration,
		"position": position,
	}
	for _, name := range []string{"list", "experiment", "set", "login", "error"} {
		pages[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+name+".html"))
	}
}

// assetURL is the versioned URL of an embedded asset, relative to /ui/.
func assetURL(name string) (string, error) {
	v, ok := assetVersions[name]
	if !ok {
		return "", fmt.Errorf("no asset %q", name)
	}
	return "static/" + name + "?v=" + v, nil
}

// serveAsset serves an embedded asset: for a year when asked for by its
// current version, else (an old page's URL) to be checked again.
func serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	v, ok := assetVersions[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Get("v") == v {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	http.ServeFileFS(w, r, staticFiles, "static/"+name)
}

// timeLayout shows times in UTC, to the second.
const timeLayout = "2006-01-02 15:04:05Z"

// formatTime shows a time.Time or *time.Time; nothing for none.
func formatTime(v any) string {
	switch t := v.(type) {
	case time.Time:
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(timeLayout)
	case *time.Time:
		if t == nil {
			return ""
		}
		return formatTime(*t)
	}
	return ""
}

// duration is how long an experiment ran, started to completed; nothing
// until both are known.
func duration(start, end *time.Time) string {
	if start == nil || end == nil {
		return ""
	}
	return end.Sub(*start).Round(time.Second).String()
}

// position shows a place in a queue counting from 1 (Kueue's from 0).
func position(q *wire.Queue) string {
	if q == nil || q.Position == nil {
		return ""
	}
	return strconv.Itoa(int(*q.Position) + 1)
}
