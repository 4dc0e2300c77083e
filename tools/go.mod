module github.com/gmini-dev/gmini/tools

go 1.26.0
