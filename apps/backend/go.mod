module github.com/gmini-dev/gmini/apps/backend

go 1.26.0
