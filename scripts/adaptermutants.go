//go:build ignore

// Adaptermutants runs the hand-written mutants of the shipped stores
// (scripts/adapter-mutants.json: changes to their SQL, Lua scripts and Go
// that gremlins cannot make) through each adapter's own tests, storetest
// included, against real servers, and reports which the tests kill:
//
//	PG_DSN=postgres://… REDIS_URL=redis://… go run scripts/adaptermutants.go [module…]
//
// Each mutant is applied alone to a copy of the working tree (git ls-files)
// in a temporary directory; the repository is never changed. A mutant
// marked "lives" is one the tests cannot tell from the original (the
// reason says why); any other that lives is a gap in the tests, and the
// run exits 1. Point PG_DSN and REDIS_URL at throw-away servers: storetest
// creates and deletes sessions. Not in CI (a few minutes).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

type mutant struct {
	Module, Name, File, Old, New string
	Lives                        string // why the tests cannot kill it, if they cannot
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "adaptermutants:", err)
		os.Exit(1)
	}
}

func run(modules []string) error {
	data, err := os.ReadFile("scripts/adapter-mutants.json")
	if err != nil {
		return fmt.Errorf("%w (run it from the repository's root)", err)
	}
	var all []mutant
	if err := json.Unmarshal(data, &all); err != nil {
		return err
	}
	for _, env := range []string{"PG_DSN", "REDIS_URL"} {
		if os.Getenv(env) == "" {
			fmt.Printf("%s is not set: that store's tests skip, and its mutants will all live\n", env)
		}
	}
	tmp, err := os.MkdirTemp("", "adaptermutants")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	files, err := exec.Command("git", "ls-files", "-co", "--exclude-standard").Output()
	if err != nil {
		return fmt.Errorf("git ls-files: %w", err)
	}
	for _, f := range strings.Split(strings.TrimSpace(string(files)), "\n") {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // deleted in the working tree
		}
		dst := filepath.Join(tmp, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
	}
	test := func(module string) (bool, string) {
		cmd := exec.Command("go", "test", "-count=1", "-failfast", "./"+module+"/...")
		cmd.Dir = tmp
		out, err := cmd.CombinedOutput()
		return err == nil, string(out)
	}
	gaps, ran := 0, 0
	baseline := map[string]bool{} // modules whose tests passed unchanged
	for _, m := range all {
		if len(modules) > 0 && !slices.Contains(modules, m.Module) {
			continue
		}
		path := filepath.Join(tmp, m.File)
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if n := bytes.Count(src, []byte(m.Old)); n != 1 {
			return fmt.Errorf("%s/%s: the text to change is in %s %d times, want once: update scripts/adapter-mutants.json", m.Module, m.Name, m.File, n)
		}
		if !baseline[m.Module] {
			if ok, out := test(m.Module); !ok {
				return fmt.Errorf("%s's tests fail without a mutant:\n%s", m.Module, out)
			}
			baseline[m.Module] = true
		}
		ran++
		if err := os.WriteFile(path, bytes.Replace(src, []byte(m.Old), []byte(m.New), 1), 0o644); err != nil {
			return err
		}
		start := time.Now()
		passed, out := test(m.Module)
		if err := os.WriteFile(path, src, 0o644); err != nil {
			return err
		}
		switch {
		case !passed && strings.Contains(out, "[build failed]"):
			gaps++
			fmt.Printf("DOES NOT BUILD %s/%s\n", m.Module, m.Name)
		case !passed:
			fmt.Printf("killed   %s/%s (%.1fs)\n", m.Module, m.Name, time.Since(start).Seconds())
		case m.Lives != "":
			fmt.Printf("lives    %s/%s, as expected: %s\n", m.Module, m.Name, m.Lives)
		default:
			gaps++
			fmt.Printf("LIVED    %s/%s: no test fails with this change\n", m.Module, m.Name)
		}
	}
	fmt.Printf("%d mutants, %d not killed that should be\n", ran, gaps)
	if gaps > 0 {
		os.Exit(1)
	}
	return nil
}
