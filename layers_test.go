package refresh_test

import (
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// layers is DESIGN.md's "Layers and files": the package's files from the
// top (what a service mounts) down to what everything uses; DPoP proofs and
// refresh tokens are tokens, beside access tokens and keys. A file may use
// what files of its own layer and the layers below declare, never what a
// layer above declares.
var layers = [][]string{
	{"middleware.go", "handler.go", "metadata.go", "verifier.go"},
	{"rotation.go", "introspect.go"},
	{"issuer.go"},
	{"token.go", "refreshtoken.go", "dpop.go", "dpop_nonce.go", "verify.go", "verify_cache.go", "cache.go", "keys.go", "store.go", "store_memory.go"},
	{"errors.go", "json.go", "doc.go"},
}

// TestLayers type-checks the package and fails for every function, method,
// variable or constant used in a file below the layer that declares it:
// the one-way layering DESIGN.md draws, kept by a test rather than by
// care. Types and struct fields are left out, since methods of one type
// (the Issuer's, above all) live in files of several layers by design; the
// functions they call are not.
func TestLayers(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: type-checks the package")
	}
	t.Parallel()
	rank := map[string]int{}
	for i, files := range layers {
		for _, f := range files {
			rank[f] = i
		}
	}
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		if _, ok := rank[name]; !ok {
			t.Errorf("%s is in no layer: add it to layers here and to DESIGN.md's drawing", name)
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	// Imports come from the compiler's export data, which go list -export
	// builds with this test's own flags (GOFLAGS), so with scripts/test.sh
	// it is what the test build already compiled: type-checking the
	// imports from source took 17 s under -race.
	out, err := exec.Command("go", "list", "-deps", "-export", "-f", "{{.ImportPath}} {{.Export}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -export: %v", err)
	}
	exports := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if path, file, ok := strings.Cut(line, " "); ok && file != "" {
			exports[path] = file
		}
	}
	lookup := func(path string) (io.ReadCloser, error) {
		file, ok := exports[path]
		if !ok {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(file)
	}
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}}
	conf := types.Config{Importer: importer.ForCompiler(fset, "gc", lookup)}
	pkg, err := conf.Check("github.com/refreshkit/refresh", fset, files, info)
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for id, obj := range info.Uses {
		if obj.Pkg() != pkg || !obj.Pos().IsValid() {
			continue
		}
		switch o := obj.(type) {
		case *types.TypeName, *types.PkgName, *types.Label:
			continue
		case *types.Var:
			if o.IsField() || o.Parent() != pkg.Scope() {
				continue // fields, locals and parameters
			}
		case *types.Const:
			if o.Parent() != pkg.Scope() {
				continue
			}
		case *types.Func:
			if sig, _ := o.Type().(*types.Signature); sig != nil && sig.Recv() != nil {
				if _, iface := sig.Recv().Type().Underlying().(*types.Interface); iface {
					continue // an interface's method is the contract, declared where the interface is
				}
			}
		}
		user, decl := fset.Position(id.Pos()), fset.Position(obj.Pos())
		from, to := filepath.Base(user.Filename), filepath.Base(decl.Filename)
		if rank[to] < rank[from] {
			bad = append(bad, user.String()+": "+from+" uses "+obj.Name()+" of "+to+", a layer above")
		}
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
}
