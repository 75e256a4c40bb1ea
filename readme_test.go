package refresh_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestREADMECompiles compiles every Go example of README.md against the
// package as it is, in a module of its own outside the repository (the
// names an example leaves to the reader come from
// testdata/readme_stubs.go.txt): a renamed or changed API that the README
// still shows fails here, not in a newcomer's editor. An example that is
// a statement list is compiled as a function body; its variables need not
// be used.
func TestREADMECompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a module")
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	stubs, err := os.ReadFile("testdata/readme_stubs.go.txt")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?ms)^```go\n(.*?)^```").FindAllSubmatch(readme, -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d Go examples in README.md; expected at least 5", len(blocks))
	}
	src := strings.Builder{}
	src.Write(stubs)
	for _, b := range blocks {
		code := string(b[1])
		if strings.HasPrefix(code, "func ") {
			src.WriteString("\n" + code)
		} else {
			src.WriteString("\nfunc _() {\n" + code + "}\n")
		}
	}
	dir := t.TempDir()
	gosum, err := os.ReadFile("go.sum")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"readme.go": src.String(),
		"go.mod":    "module readmecheck\n\ngo 1.26\n\nrequire github.com/refreshkit/refresh v0.0.0\n\nreplace github.com/refreshkit/refresh => " + root + "\n",
		"go.sum":    string(gosum),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "build", "-gcflags=-e", "-o", os.DevNull, ".")
	cmd.Dir = dir
	// The module cache already holds what the core needs: no network.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off")
	out, err := cmd.CombinedOutput()
	if err == nil {
		return
	}
	var errs []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "./readme.go:") && !strings.Contains(line, "declared and not used") {
			errs = append(errs, line)
		}
	}
	if len(errs) > 0 || !strings.Contains(string(out), "./readme.go:") {
		t.Fatalf("README.md's Go examples do not compile (as wrapped: stubs, then each example in turn):\n%s", out)
	}
}
