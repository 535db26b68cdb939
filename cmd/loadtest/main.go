// Command loadtest is wsfleet's bundled load tester: see `loadtest --help`
// and docs/loadtest.md. With WSFLEET_LOADTEST_WORKER=1 in its environment
// it runs as a worker process of another loadtest.
package main

import (
	"os"

	"github.com/wsfleet/wsfleet/loadtest"
)

func main() { os.Exit(loadtest.Main(os.Args[1:])) }
