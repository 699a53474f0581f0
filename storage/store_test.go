package storage

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// Child processes: some tests re-run this test binary as a second process,
// because a file lock and a crash are only honest across processes.
const (
	childRoleEnv = "GPUBOT_STORAGE_TEST_CHILD"
	childDBEnv   = "GPUBOT_STORAGE_TEST_DB"
)

// child is a re-executed test binary running one test in a given role.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout, line by line; closed when the child's stdout closes
}

func startChild(t *testing.T, testName, role, dbPath string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+testName+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), childRoleEnv+"="+role, childDBEnv+"="+dbPath)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 1024)}
	go func() {
		defer close(c.lines)
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			c.lines <- scanner.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return c
}

// waitFor reads the child's output until a line equal to want, or fails.
func (c *child) waitFor(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				t.Fatalf("child exited before saying %q", want)
			}
			if line == want {
				return
			}
		case <-deadline:
			t.Fatalf("child did not say %q within %v", want, timeout)
		}
	}
}

// TestLockHolderChild, run as a child, holds the database until its stdin
// closes. Run normally, it shows that a second Open in the same process is
// refused too, since each Open takes its own lock on the file.
func TestLockHolderChild(t *testing.T) {
	if os.Getenv(childRoleEnv) == "hold" {
		holdLock(t, os.Getenv(childDBEnv))
		return
	}
	path := filepath.Join(t.TempDir(), "gpubot.db")
	first, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = Open(path, Options{OpenTimeout: 200 * time.Millisecond})
	checkInUse(t, err, path)
}

func holdLock(t *testing.T, path string) {
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("child open: %v", err)
	}
	defer s.Close()
	fmt.Println("locked")
	released := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(released)
	}()
	select {
	case <-released:
	case <-time.After(30 * time.Second):
	}
}

func checkInUse(t *testing.T, err error, path string) {
	t.Helper()
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("got %v, want ErrInUse", err)
	}
	want := path + " is in use by another gpubot (it holds the file lock); stop it or set DB_PATH to another file"
	if err.Error() != want {
		t.Errorf("message %q\nwant    %q", err, want)
	}
}

func TestOpenRefusesFileHeldByAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpubot.db")
	holder := startChild(t, "TestLockHolderChild", "hold", path)
	holder.waitFor(t, "locked", 20*time.Second)

	start := time.Now()
	_, err := Open(path, Options{}) // the default OpenTimeout
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("a second gpubot waited %v for the lock; it should give up within 2s", waited)
	}
	checkInUse(t, err, path)

	// Once the other gpubot is gone, the file opens.
	_ = holder.stdin.Close()
	exited := make(chan error, 1)
	go func() { exited <- holder.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("holder: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("holder did not exit")
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("open after the holder exited: %v", err)
	}
	_ = s.Close()
}

func TestFreshFileGetsCurrentSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpubot.db")
	// An empty bbolt file, as version 0, gets every bucket.
	raw, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.Close()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer s.Close()
	if got := schemaVersionOf(t, s); got != SchemaVersion() || got != 3 {
		t.Errorf("schema %d, want %d", got, SchemaVersion())
	}
	mustCreate(t, s, newRequest(alice, domain.StateApproved))
}

func schemaVersionOf(t *testing.T, s *Store) int {
	t.Helper()
	var v int
	if err := s.db.View(func(tx *bolt.Tx) (err error) { v, err = schemaOf(tx); return err }); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpubot.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	setSchema(t, path, 7)

	_, err = Open(path, Options{})
	if !errors.Is(err, domain.ErrNewerSchema) {
		t.Fatalf("got %v, want domain.ErrNewerSchema", err)
	}
	if want := "written by a newer gpubot (schema 7); this one understands up to 3: upgrade gpubot"; !strings.Contains(err.Error(), want) {
		t.Errorf("message %q does not say %q", err, want)
	}
	// The refusal released the file.
	raw, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("file still locked after the refusal: %v", err)
	}
	_ = raw.Close()
}

func setSchema(t *testing.T, path string, version int) {
	t.Helper()
	raw, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	err = raw.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketMeta).Put([]byte(metaSchemaKey), []byte(strconv.Itoa(version)))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMigrationsRunInOrderInOneTransaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpubot.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	kept := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	_ = s.Close()

	var ran []int
	step := func(from int, fail bool) migration {
		return migration{from: from, apply: func(tx *bolt.Tx) error {
			ran = append(ran, from)
			if _, err := tx.CreateBucket(fmt.Appendf(nil, "added_by_%d", from)); err != nil {
				return err
			}
			if fail {
				return errors.New("disk full")
			}
			return nil
		}}
	}
	n := SchemaVersion()
	plus2 := append(migrations(), step(n, false), step(n+1, false))
	s, err = openWith(path, Options{}, plus2)
	if err != nil {
		t.Fatalf("migrate to %d: %v", n+2, err)
	}
	if fmt.Sprint(ran) != fmt.Sprint([]int{n, n + 1}) || schemaVersionOf(t, s) != n+2 {
		t.Errorf("ran %v, schema %d; want [%d %d] and %d", ran, schemaVersionOf(t, s), n, n+1, n+2)
	}
	if r, err := s.Request(context.Background(), kept.ID); err != nil || r.ID != kept.ID {
		t.Errorf("data lost in migration: %v", err)
	}
	_ = s.Close()

	ran = nil
	_, err = openWith(path, Options{}, append(plus2, step(n+2, false), step(n+3, true)))
	if want := fmt.Sprintf("migrate schema %d to %d: disk full", n+3, n+4); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("failing migration: got %v, want %q", err, want)
	}
	s, err = openWith(path, Options{}, plus2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := schemaVersionOf(t, s); v != n+2 {
		t.Errorf("a failed migration left schema %d, want %d", v, n+2)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(fmt.Appendf(nil, "added_by_%d", n+2)) != nil {
			return errors.New("the first step of the failed run was kept")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func TestOpenRejectsAFileThatIsNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpubot.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a database\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v, want an error naming the file", err)
	}
}
