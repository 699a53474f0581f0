package main

import (
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	binary := filepath.Join(t.TempDir(), "gpubot")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w -X main.version=v0.0.0-test", "-o", binary, ".")
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
	versionOutput, err := exec.CommandContext(ctx, binary, "version").Output()
	if err != nil {
		t.Fatalf("gpubot version: %v", err)
	}
	if got, want := string(versionOutput), "gpubot v0.0.0-test\n"; got != want {
		t.Errorf("gpubot version printed %q, want %q: -X main.version did not stamp it", got, want)
	}
}
