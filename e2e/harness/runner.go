package harness

import (
	"errors"
	"fmt"
	"os"

	"github.com/llm-runner-router/llmrouter/pkg/testkit"
)

// Runner implements testkit.T for commands (the local mesh, benchmarks):
// cleanups run at Close, in reverse order, and Fatal unwinds to Recover.
//
//	r := harness.NewRunner()
//	defer r.Close()
//	defer r.Recover(&err)
type Runner struct {
	dir      string
	cleanups []func()
	failed   bool
}

var _ testkit.T = (*Runner)(nil)

// fatal carries a Fatal message through panic to Recover.
type fatal string

// NewRunner returns a runner with its own temporary directory.
func NewRunner() *Runner {
	dir, err := os.MkdirTemp("", "llmrouter-run")
	if err != nil {
		panic(err)
	}
	return &Runner{dir: dir}
}

// Recover turns a Fatal into *err; other panics continue.
func (r *Runner) Recover(err *error) {
	if p := recover(); p != nil {
		f, ok := p.(fatal)
		if !ok {
			panic(p)
		}
		*err = errors.New(string(f))
	}
}

func (r *Runner) Helper()                   {}
func (r *Runner) Failed() bool              { return r.failed }
func (r *Runner) Cleanup(f func())          { r.cleanups = append(r.cleanups, f) }
func (r *Runner) Logf(f string, a ...any)   { fmt.Fprintf(os.Stderr, f+"\n", a...) }
func (r *Runner) Fatal(args ...any)         { r.Fatalf("%s", fmt.Sprint(args...)) }
func (r *Runner) Fatalf(f string, a ...any) { r.failed = true; panic(fatal(fmt.Sprintf(f, a...))) }

// TempDir returns a new directory removed at Close.
func (r *Runner) TempDir() string {
	d, err := os.MkdirTemp(r.dir, "")
	if err != nil {
		r.Fatal(err)
	}
	return d
}

// Close runs the cleanups and removes the temporary directory.
func (r *Runner) Close() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	os.RemoveAll(r.dir)
}
