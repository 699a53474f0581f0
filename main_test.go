package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/testkit"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/storage"
)

// There is no container engine where these tests run, so they check the
// Dockerfile's text for what the image must do, and build the program the
// way the Dockerfile does to show the result is a static binary.

// readmeBuildMarkers enclose, in README.md's Docker section, the one command
// that builds the binary; the Dockerfile must run exactly that command.
const (
	readmeBuildStart = "<!-- build -->"
	readmeBuildEnd   = "<!-- /build -->"
)

// dockerInstruction is one Dockerfile instruction with its continuation
// lines joined, e.g. {"RUN", "go mod download"}.
type dockerInstruction struct {
	keyword   string
	arguments string
}

// dockerStage is the instructions from one FROM up to the next.
type dockerStage struct {
	from         string
	instructions []dockerInstruction
}

func (s dockerStage) all(keyword string) []string {
	var arguments []string
	for _, instruction := range s.instructions {
		if instruction.keyword == keyword {
			arguments = append(arguments, instruction.arguments)
		}
	}
	return arguments
}

func (s dockerStage) last(keyword string) string {
	all := s.all(keyword)
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1]
}

func readDockerfile(t *testing.T) []dockerStage {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	var stages []dockerStage
	var pending string
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if continued, ok := strings.CutSuffix(line, `\`); ok {
			pending += continued + " "
			continue
		}
		line, pending = pending+line, ""
		keyword, arguments, _ := strings.Cut(line, " ")
		keyword, arguments = strings.ToUpper(keyword), strings.TrimSpace(arguments)
		if keyword == "FROM" {
			stages = append(stages, dockerStage{from: arguments})
			continue
		}
		if len(stages) == 0 {
			if keyword == "ARG" {
				continue // an ARG before FROM parameterises the FROM lines
			}
			t.Fatalf("Dockerfile: %s before the first FROM", keyword)
		}
		stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, dockerInstruction{keyword, arguments})
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a small run stage", len(stages))
	}
	return stages
}

// dockerBuildCommand is the build stage's RUN command that invokes go build.
func dockerBuildCommand(t *testing.T, stages []dockerStage) string {
	t.Helper()
	var commands []string
	for _, run := range stages[0].all("RUN") {
		if strings.Contains(run, "go build") {
			commands = append(commands, run)
		}
	}
	if len(commands) != 1 {
		t.Fatalf("build stage has %d RUN lines with go build, want exactly one: %q", len(commands), commands)
	}
	return commands[0]
}

func execForm(t *testing.T, keyword, arguments string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(arguments), &argv); err != nil {
		t.Fatalf("%s %s is not in exec (JSON array) form: %v", keyword, arguments, err)
	}
	return argv
}

func TestDockerfileBuildsAStaticVersionedBinary(t *testing.T) {
	t.Parallel()
	stages := readDockerfile(t)
	build := stages[0]
	if !strings.HasPrefix(build.from, "golang:1.26 ") && build.from != "golang:1.26" {
		t.Errorf("build stage is FROM %q, want golang:1.26", build.from)
	}
	if !slices.Contains(build.all("ARG"), "VERSION=dev") {
		t.Errorf("build stage ARGs %q lack VERSION=dev", build.all("ARG"))
	}
	command := dockerBuildCommand(t, stages)
	want := `CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/gpubot .`
	if command != want {
		t.Errorf("Dockerfile builds with\n  %s\nwant\n  %s", command, want)
	}
}

func TestDockerfileRunsAsNonRootWithDataOnAVolume(t *testing.T) {
	t.Parallel()
	stages := readDockerfile(t)
	final := stages[len(stages)-1]

	user := final.last("USER")
	nonrootBase := strings.HasSuffix(final.from, ":nonroot")
	if user == "" && !nonrootBase {
		t.Errorf("run stage FROM %q sets no USER: the bot would run as root", final.from)
	}
	if name, _, _ := strings.Cut(user, ":"); name == "root" || name == "0" {
		t.Errorf("run stage has USER %q", user)
	}
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && !strings.HasPrefix(final.from, "scratch") {
		t.Errorf("run stage is FROM %q, want a small static base (distroless static or scratch)", final.from)
	}
	if !slices.Contains(final.all("ENV"), "DB_PATH=/data/gpubot.db") {
		t.Errorf("run stage ENVs %q lack DB_PATH=/data/gpubot.db", final.all("ENV"))
	}
	if volume := final.last("VOLUME"); volume != "/data" && volume != `["/data"]` {
		t.Errorf("VOLUME is %q, want /data, where DB_PATH points", volume)
	}
	if expose := final.last("EXPOSE"); expose != "8080" {
		t.Errorf("EXPOSE is %q, want 8080, HTTP_ADDR's default port", expose)
	}
}

func TestDockerfileEntrypointAndHealthcheck(t *testing.T) {
	t.Parallel()
	stages := readDockerfile(t)
	final := stages[len(stages)-1]

	entrypoint := execForm(t, "ENTRYPOINT", final.last("ENTRYPOINT"))
	if !slices.Equal(entrypoint, []string{"/gpubot"}) {
		t.Errorf("ENTRYPOINT %q, want [/gpubot]", entrypoint)
	}
	if cmd := execForm(t, "CMD", final.last("CMD")); !slices.Equal(cmd, []string{"serve"}) {
		t.Errorf("CMD %q, want [serve]", cmd)
	}
	healthcheck := final.last("HEALTHCHECK")
	_, probe, found := strings.Cut(healthcheck, "CMD ")
	if !found {
		t.Fatalf("HEALTHCHECK %q has no CMD", healthcheck)
	}
	if argv := execForm(t, "HEALTHCHECK CMD", probe); !slices.Equal(argv, []string{"/gpubot", "healthcheck"}) {
		t.Errorf("HEALTHCHECK runs %q, want [/gpubot healthcheck]", argv)
	}

	// The binary the entrypoint names must be the one the build stage made.
	wantCopy := "--from=build /out/gpubot /gpubot"
	if !slices.Contains(final.all("COPY"), wantCopy) {
		t.Errorf("run stage COPYs %q, want %q", final.all("COPY"), wantCopy)
	}
}

func TestDockerignoreKeepsSourcesAndDropsState(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(".dockerignore")
	if err != nil {
		t.Fatalf("read .dockerignore: %v", err)
	}
	var patterns []string
	for line := range strings.Lines(string(data)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimPrefix(line, "/"))
		}
	}
	ignored := func(name string) bool {
		for _, pattern := range patterns {
			if matched, _ := path.Match(pattern, name); matched {
				return true
			}
		}
		return false
	}
	for _, name := range []string{".git", "gpubot.db", "gpubot"} {
		if !ignored(name) {
			t.Errorf(".dockerignore sends %s into the build context", name)
		}
	}
	for _, name := range []string{"go.mod", "go.sum", "main.go", "manifest.yml", "bot", "fal", "storage", "handlers"} {
		if ignored(name) {
			t.Errorf(".dockerignore drops %s, which the build needs", name)
		}
	}
}

// TestReadmeGivesTheDockerfileBuildCommand keeps README.md's Docker section
// and the Dockerfile from drifting apart. README.md must hold the command
// alone between the markers, in a code block:
//
//	<!-- build -->
//	```sh
//	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/gpubot .
//	```
//	<!-- /build -->
func TestReadmeGivesTheDockerfileBuildCommand(t *testing.T) {
	t.Parallel()
	command := dockerBuildCommand(t, readDockerfile(t))
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatalf("read README.md: %v", err)
	}
	_, afterStart, found := strings.Cut(string(data), readmeBuildStart)
	section, _, foundEnd := strings.Cut(afterStart, readmeBuildEnd)
	if !found || !foundEnd {
		t.Fatalf("README.md's Docker section lacks the build command between %s and %s; add:\n\n%s\n```sh\n%s\n```\n%s",
			readmeBuildStart, readmeBuildEnd, readmeBuildStart, command, readmeBuildEnd)
	}
	var lines []string
	for line := range strings.Lines(section) {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "```") {
			lines = append(lines, strings.TrimPrefix(line, "$ "))
		}
	}
	if len(lines) != 1 || lines[0] != command {
		t.Errorf("README.md gives between %s and %s:\n  %s\nbut the Dockerfile runs:\n  %s",
			readmeBuildStart, readmeBuildEnd, strings.Join(lines, "\n  "), command)
	}
}

// TestProgramBuildsAsAStaticBinary builds gpubot with the Dockerfile's flags
// and checks that it needs no dynamic loader or shared library, so it runs
// on a distroless static or scratch image, and that the version given to the
// linker is the one `gpubot version` prints.
func TestProgramBuildsAsAStaticBinary(t *testing.T) {
	t.Parallel()
	// No clock of its own: a cold build on a busy machine takes minutes, and the
	// test's deadline (go test -timeout) bounds it.
	binary := filepath.Join(t.TempDir(), "gpubot")
	build := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-ldflags=-s -w -X main.version=v0.0.0-test", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if output, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, output)
	}

	executable, err := elf.Open(binary)
	if err != nil {
		t.Fatalf("open the binary as ELF: %v", err)
	}
	defer executable.Close()
	for _, program := range executable.Progs {
		if program.Type == elf.PT_INTERP || program.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v segment: it needs the dynamic loader", program.Type)
		}
	}
	if libraries, _ := executable.ImportedLibraries(); len(libraries) > 0 {
		t.Errorf("binary needs shared libraries %q", libraries)
	}

	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		t.Fatalf("read build info: %v", err)
	}
	settings := make(map[string]string)
	for _, setting := range info.Settings {
		settings[setting.Key] = setting.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings CGO_ENABLED=%q -trimpath=%q, want 0 and true", settings["CGO_ENABLED"], settings["-trimpath"])
	}

	// -trimpath keeps -ldflags out of the build info, so ask the binary.
	versionOutput, err := exec.CommandContext(t.Context(), binary, "version").Output()
	if err != nil {
		t.Fatalf("gpubot version: %v", err)
	}
	if got, want := string(versionOutput), "gpubot v0.0.0-test\n"; got != want {
		t.Errorf("gpubot version printed %q, want %q: -X main.version did not stamp it", got, want)
	}
}

// The program, run in-process as main runs it.

func env(vars map[string]string) func(string) string { return func(k string) string { return vars[k] } }

// The etcd server (with its init-time metrics and 5 MB of code) is for tests:
// gpubot speaks to an etcd through the client alone.
func TestBinaryDoesNotLinkTheEtcdServer(t *testing.T) {
	t.Parallel()
	list := exec.CommandContext(t.Context(), "go", "list", "-deps", ".")
	list.Env = append(os.Environ(), "GOFLAGS=")
	output, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, output)
	}
	for _, pkg := range strings.Fields(string(output)) {
		if strings.HasPrefix(pkg, "go.etcd.io/etcd/server/") || strings.HasPrefix(pkg, "go.etcd.io/raft/") ||
			strings.HasSuffix(pkg, "/internal/etcdtest") {
			t.Errorf("the gpubot binary links %s", pkg)
		}
	}
}

func TestRunVersionAndHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, env(nil), nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if out.String() != "gpubot dev\n" {
		t.Fatalf("version printed %q", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"help"}, env(nil), nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"serve", "console", "healthcheck", "SLACK_BOT_TOKEN", "HOURLY_PRICES"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestRunRefusesAnUnknownCommand(t *testing.T) {
	err := run(context.Background(), []string{"deploy"}, env(nil), nil, io.Discard, io.Discard)
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "usage: gpubot") {
		t.Fatalf("err = %v (exit %d), want a usage error with exit status 2", err, exitCode(err))
	}
}

// A bad configuration stops gpubot at start with one message naming every problem,
// exit status 2, and no secret in it.
func TestServeListsEveryConfigurationProblem(t *testing.T) {
	vars := map[string]string{
		"SLACK_BOT_TOKEN":  "xapp-secret-in-the-wrong-place",
		"DEFAULT_LIFETIME": "forever",
		"APPROVERS":        "bob",
	}
	err := run(context.Background(), []string{"serve"}, env(vars), nil, io.Discard, io.Discard)
	var ce *config.Error
	if !errors.As(err, &ce) || exitCode(err) != 2 {
		t.Fatalf("err = %v (exit %d), want a configuration error with exit status 2", err, exitCode(err))
	}
	for _, name := range []string{"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "FAL_ADMIN_API_KEY", "DEFAULT_LIFETIME", "APPROVERS"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("the message does not name %s:\n%v", name, err)
		}
	}
	if strings.Contains(err.Error(), "secret-in-the-wrong-place") {
		t.Errorf("the message shows the token:\n%v", err)
	}
}

// serve runs until its context ends, answers /healthz, /readyz and /metrics meanwhile,
// logs JSON without secrets, and leaves the store closed and reusable.
func TestServeRunsAndStopsCleanly(t *testing.T) {
	const botToken, appToken, falKey = "xoxb-run-test-token", "xapp-run-test-token", "fal-run-test-key"
	sim := slacksim.New(slacksim.Options{BotToken: botToken, AppToken: appToken})
	defer sim.Close()
	fs := falsim.New(falsim.Options{APIKey: falKey})
	defer fs.Close()
	addr := freeAddr(t)
	dbPath := filepath.Join(t.TempDir(), "gpubot.db")
	vars := map[string]string{
		"SLACK_BOT_TOKEN": botToken, "SLACK_APP_TOKEN": appToken, "SLACK_API_URL": sim.APIURL(),
		"FAL_ADMIN_API_KEY": falKey, "FAL_API_URL": fs.URL(), "DB_PATH": dbPath,
		"APPROVAL_CHANNEL": "CAPPROVALS", "APPROVERS": "UBOB", "HTTP_ADDR": addr, "POLL_INTERVAL": "50ms",
	}
	var logs testkit.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve"}, env(vars), nil, io.Discard, &logs) }()

	waitFor(t, "/readyz to answer 200", func() bool { return get(addr, "/readyz") == http.StatusOK })
	if err := run(context.Background(), []string{"healthcheck"}, env(vars), nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("healthcheck: %v", err)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, family := range []string{"gpubot_ack_latency_seconds", "gpubot_approvals_waiting", "go_goroutines"} {
		if !strings.Contains(string(body), family) {
			t.Errorf("/metrics lacks %s", family)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after its context ended, want nil (exit 0)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30 s")
	}
	store, err := storage.Open(dbPath, storage.Options{OpenTimeout: time.Second})
	if err != nil {
		t.Fatalf("store not released: %v", err)
	}
	store.Close()
	text := logs.String()
	if !strings.Contains(text, `"msg":"gpubot running"`) {
		t.Errorf("no JSON start-up line in the logs:\n%s", text)
	}
	for _, secret := range []string{botToken, appToken, falKey} {
		if strings.Contains(text, secret) {
			t.Errorf("a secret is in the logs:\n%s", text)
		}
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(addr, path string) int {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
