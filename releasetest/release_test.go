// Package releasetest proves that the repository's published modules
// resolve the way a third party gets them: from a module proxy, at the
// versions their go.mod files require each other at, with no replace
// directive and no workspace. It builds such a proxy on disk from the working
// tree (module zips made by golang.org/x/mod/zip, as proxy.golang.org serves
// them), then, in a throw-away module outside the repository, runs `go get`
// of every published library, builds and runs a program against the memory
// store, and `go install`s the demo.
package releasetest

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

const prefix = "github.com/refreshkit/refresh"

// unpublished modules of the repository: never tagged, never required.
var unpublished = []string{"bench", "browsertest", "releasetest"}

// mod is one published module of the working tree.
type mod struct {
	dir, path, version string
	file               *modfile.File
}

func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// published reads go.work: every module it uses is published; every other
// go.mod in the tree must be listed as unpublished. Versions are the ones the
// published go.mod files require; a module nobody requires (the demo) gets
// the core's.
func published(t *testing.T, repo string) []*mod {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repo, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	work, err := modfile.ParseWork("go.work", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mods []*mod
	byPath := map[string]*mod{}
	for _, u := range work.Use {
		dir := filepath.Clean(filepath.Join(repo, u.Path))
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		f, err := modfile.Parse(filepath.Join(dir, "go.mod"), data, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := &mod{dir: dir, path: f.Module.Mod.Path, file: f}
		mods = append(mods, m)
		byPath[m.path] = m
	}
	// Every go.mod is in go.work or unpublished.
	err = filepath.WalkDir(repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.Name() != "go.mod" {
			return nil
		}
		rel, _ := filepath.Rel(repo, filepath.Dir(p))
		if slices.Contains(unpublished, rel) {
			return nil
		}
		for _, m := range mods {
			if m.dir == filepath.Dir(p) {
				return nil
			}
		}
		t.Errorf("%s is neither used by go.work (published) nor listed as unpublished in releasetest", p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		if !strings.HasPrefix(m.path, prefix) {
			t.Fatalf("go.work uses %s, which is not under %s", m.path, prefix)
		}
		if len(m.file.Replace) > 0 {
			t.Errorf("%s/go.mod has replace directives: consumers ignore them, and `go install …@version` refuses the module", m.path)
		}
		for _, r := range m.file.Require {
			if !strings.HasPrefix(r.Mod.Path, prefix) {
				continue
			}
			dep, ok := byPath[r.Mod.Path]
			switch {
			case !ok:
				t.Errorf("%s requires %s, which is not a published module of this repository", m.path, r.Mod.Path)
			case module.CheckPathMajor(r.Mod.Version, "") != nil || strings.Contains(r.Mod.Version, "-"):
				t.Errorf("%s requires %s %s: require a released version (vX.Y.Z), not a pseudo-version or pre-release", m.path, r.Mod.Path, r.Mod.Version)
			case dep.version != "" && dep.version != r.Mod.Version:
				t.Errorf("%s is required at both %s and %s: release them together", r.Mod.Path, dep.version, r.Mod.Version)
			default:
				dep.version = r.Mod.Version
			}
		}
	}
	core := byPath[prefix]
	if core == nil || core.version == "" {
		t.Fatalf("no published module requires the core %s", prefix)
	}
	for _, m := range mods {
		if m.version == "" {
			m.version = core.version
		}
	}
	// The workspace maps each required version to its directory (go.work's
	// versioned replaces); without them the workspace fetches the version.
	for _, m := range mods {
		required := false
		for _, o := range mods {
			for _, r := range o.file.Require {
				required = required || r.Mod.Path == m.path
			}
		}
		if !required {
			continue
		}
		found := false
		for _, r := range work.Replace {
			if r.Old.Path == m.path && r.Old.Version == m.version && filepath.Clean(filepath.Join(repo, r.New.Path)) == m.dir {
				found = true
			}
		}
		if !found {
			t.Errorf("go.work lacks `replace %s %s => ./%s`: the workspace would fetch that version instead of using the tree", m.path, m.version, mustRel(repo, m.dir))
		}
	}
	return mods
}

func mustRel(base, p string) string {
	r, err := filepath.Rel(base, p)
	if err != nil {
		return p
	}
	return r
}

// writeProxy writes m at its version into the proxy directory dir, in the
// GOPROXY file layout.
func writeProxy(t *testing.T, dir string, m *mod) {
	t.Helper()
	esc, err := module.EscapePath(m.path)
	if err != nil {
		t.Fatal(err)
	}
	v := filepath.Join(dir, esc, "@v")
	if err := os.MkdirAll(v, 0o755); err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(m.dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := json.Marshal(map[string]string{"Version": m.version, "Time": "2026-12-01T00:00:00Z"})
	for name, data := range map[string][]byte{"list": []byte(m.version + "\n"), m.version + ".info": info, m.version + ".mod": gomod} {
		if err := os.WriteFile(filepath.Join(v, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(v, m.version+".zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := zip.CreateFromDir(f, module.Version{Path: m.path, Version: m.version}, m.dir); err != nil {
		t.Fatalf("zip of %s: %v", m.path, err)
	}
}

// goCmd runs the go command in dir with env added to a clean module setup:
// no workspace, this Go only, module cache and checksums as given.
func goCmd(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOTOOLCHAIN=local",
		// -trimpath keeps build-cache hits across the test's module caches.
		"GOFLAGS=-modcacherw -trimpath", "GONOSUMDB=", "GOPRIVATE=", "GONOPROXY=")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const consumer = `package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/refreshkit/refresh"
	"github.com/refreshkit/refresh/pgstore"
	"github.com/refreshkit/refresh/redisstore"
	"github.com/refreshkit/refresh/sqlitestore"
)

// The server adapters must resolve and compile; the program runs on the
// memory store and on an SQLite file.
var (
	_ refresh.Store = (*pgstore.Store)(nil)
	_ refresh.Store = (*redisstore.Store)(nil)
)

func main() {
	dir, err := os.MkdirTemp("", "consumer")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	lite, err := sqlitestore.Open(filepath.Join(dir, "sessions.db"))
	if err != nil {
		panic(err)
	}
	defer lite.Close()
	mem := refresh.NewMemoryStore()
	defer mem.Close()
	for _, store := range []refresh.Store{mem, lite} {
		try(store)
	}
}

func try(store refresh.Store) {
	ctx := context.Background()
	iss, err := refresh.NewIssuer(refresh.Config{
		Issuer: "https://auth.example", Audience: "api",
		Keys:        []refresh.Key{{Algorithm: refresh.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}},
		RefreshKeys: []refresh.RefreshKey{{ID: 1, Secret: []byte("fedcba9876543210fedcba9876543210")}},
		Store:       store,
	})
	if err != nil {
		panic(err)
	}
	p, err := iss.Issue(ctx, "alice")
	if err != nil {
		panic(err)
	}
	q, err := iss.Rotate(ctx, p.RefreshToken)
	if err != nil {
		panic(err)
	}
	c, err := iss.Verify(ctx, q.AccessToken)
	if err != nil {
		panic(err)
	}
	_, err = iss.Rotate(ctx, p.RefreshToken)
	fmt.Println("subject", c.Subject, "reuse refused:", err != nil)
}
`

// resolve builds the proxy of mods and runs the consumer against it. It
// returns the failing step's output, or "" when every step passed.
func resolve(t *testing.T, mods []*mod) string {
	t.Helper()
	tmp := t.TempDir()
	proxy := filepath.Join(tmp, "proxy")
	for _, m := range mods {
		writeProxy(t, proxy, m)
	}
	realCache, err := goCmd(t, tmp, nil, "env", "GOMODCACHE")
	if err != nil {
		t.Fatal(realCache)
	}
	// 1. Warm a private cache: our modules can only come from the proxy on
	// disk (they are not published); third-party ones from the local module
	// cache or, failing that, the network.
	warm := filepath.Join(tmp, "warm")
	env := []string{"GOMODCACHE=" + warm, "GOSUMDB=off", "GOBIN=" + filepath.Join(tmp, "warm-bin"),
		"GOPROXY=file://" + proxy + ",file://" + filepath.Join(strings.TrimSpace(realCache), "cache", "download") + ",https://proxy.golang.org"}
	if msg := consume(t, filepath.Join(tmp, "warm-app"), mods, env); msg != "" {
		return msg
	}
	// 2. Copy the third-party modules into the proxy; from here on GOPROXY
	// is that one directory and nothing else.
	src := filepath.Join(warm, "cache", "download")
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if strings.HasPrefix(rel, filepath.Join("github.com", "refreshkit")) || strings.HasPrefix(rel, "sumdb") {
			return nil
		}
		dst := filepath.Join(proxy, rel)
		if _, err := os.Stat(dst); err == nil {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	// 3. Fresh consumers, a fresh module cache, the proxy on disk only.
	bin := filepath.Join(tmp, "bin")
	env = []string{"GOMODCACHE=" + filepath.Join(tmp, "cold"), "GOPROXY=file://" + proxy, "GOSUMDB=off", "GOBIN=" + bin}
	app := filepath.Join(tmp, "app")
	if msg := consume(t, app, mods, env); msg != "" {
		return msg + "\n(GOPROXY=file://" + proxy + " only)"
	}
	out, err := exec.Command(filepath.Join(app, "consumer")).CombinedOutput()
	if err != nil || !bytes.Equal(out, []byte(strings.Repeat("subject alice reuse refused: true\n", 2))) {
		return "the consumer program: " + string(out) + " " + errString(err)
	}
	if _, err := os.Stat(filepath.Join(bin, "refresh-demo")); err != nil {
		return "go install of the demo left no binary: " + err.Error()
	}
	data, _ := os.ReadFile(filepath.Join(app, "go.mod"))
	t.Logf("consumer go.mod after go get, from the proxy on disk only:\n%s", data)
	return ""
}

// consume is what a third party does, in modules under dir: `go get` of
// each published library alone (its own requirements must resolve, not
// only with the core beside it), then of all of them for one program that
// is built, and `go install` of the demo at its version.
func consume(t *testing.T, dir string, mods []*mod, env []string) string {
	t.Helper()
	newModule := func(d string) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "go.mod"), []byte("module example.com/consumer\n\ngo 1.26.0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var gets []string
	var demo string
	for i, m := range mods {
		if strings.HasPrefix(m.path, prefix+"/cmd/") {
			demo = m.path + "@" + m.version
			continue
		}
		gets = append(gets, m.path+"@"+m.version)
		alone := filepath.Join(dir, "alone", strconv.Itoa(i))
		newModule(alone)
		if out, err := goCmd(t, alone, env, "get", m.path+"@"+m.version); err != nil {
			return "go get " + m.path + "@" + m.version + " (alone, in a new module):\n" + out
		}
	}
	newModule(dir)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(consumer), 0o644); err != nil {
		t.Fatal(err)
	}
	// Built as this test is (-race under go test -race): the compiled
	// dependencies are then the ones the other modules' tests use.
	steps := [][]string{append([]string{"get"}, gets...), append(append([]string{"build"}, raceFlag...), "-o", "consumer", "."), append(append([]string{"install"}, raceFlag...), demo)}
	for _, s := range steps {
		if out, err := goCmd(t, dir, env, s...); err != nil {
			return "go " + strings.Join(s, " ") + ":\n" + out
		}
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestPublishedModulesResolve: every published module resolves from a
// proxy at the versions the others require it at, a program builds and
// runs against them, and the demo installs with `go install …@version`.
func TestPublishedModulesResolve(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a module proxy and a consumer")
	}
	mods := published(t, root(t))
	if t.Failed() {
		t.FailNow()
	}
	for _, m := range mods {
		t.Logf("publishing %s %s from %s", m.path, m.version, m.dir)
	}
	if msg := resolve(t, mods); msg != "" {
		t.Fatal(msg)
	}
}

// TestBrokenGoModIsCaught: the check is not vacuous. A published adapter
// whose go.mod requires the core at the pseudo-version a replace directive
// used to hide (the bug this package exists for) fails both the static
// check and resolution from the proxy.
func TestBrokenGoModIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	mods := published(t, root(t))
	var broken []*mod
	for _, m := range mods {
		if m.path != prefix+"/pgstore" {
			broken = append(broken, m)
			continue
		}
		// A copy of pgstore whose go.mod requires an unpublished core.
		dir := filepath.Join(t.TempDir(), "pgstore")
		if err := os.CopyFS(dir, os.DirFS(m.dir)); err != nil {
			t.Fatal(err)
		}
		orig, err := os.ReadFile(filepath.Join(m.dir, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		f, err := modfile.Parse("go.mod", orig, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.AddRequire(prefix, "v0.0.0-00010101000000-000000000000"); err != nil {
			t.Fatal(err)
		}
		data, err := f.Format()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		broken = append(broken, &mod{dir: dir, path: m.path, version: m.version, file: f})
	}
	msg := resolve(t, broken)
	if msg == "" {
		t.Fatal("a consumer resolved a pgstore that requires an unpublished core version: the check proves nothing")
	}
	if !strings.Contains(msg, "v0.0.0-00010101000000-000000000000") {
		t.Fatalf("resolution failed, but not on the broken requirement:\n%s", msg)
	}
	t.Logf("as it must, resolution failed:\n%s", firstLines(msg, 4))
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
