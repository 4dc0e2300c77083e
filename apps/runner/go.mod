module github.com/gmini-dev/gmini/apps/runner

go 1.26.0
