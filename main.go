// Command gpubot is a Slack bot that gives engineers fal GPU machines: `/gpu create 8x`,
// an approver clicks Approve, and the requester's thread says when it is ready.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gpubot/gpubot/internal/app"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/console"
	"github.com/gpubot/gpubot/internal/metrics"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpubot:", err)
		os.Exit(exitCode(err))
	}
}

// usageError is a mistake in how gpubot was started: exit status 2.
type usageError struct{ error }

func exitCode(err error) int {
	var ue usageError
	var ce *config.Error
	if errors.As(err, &ue) || errors.As(err, &ce) {
		return 2
	}
	return 1
}

const usage = `usage: gpubot [serve|migrate|console|version|healthcheck|help]
  serve        run the bot (the default); settings come from the environment
  migrate      copy the bbolt file at DB_PATH into the etcd at ETCD_ENDPOINTS (gpubot stopped)
  console      try gpubot without Slack or fal: type /gpu commands at a prompt
  version      print the version
  healthcheck  ask a running gpubot's /healthz on HTTP_ADDR (for container health checks)
`

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "serve":
		return serve(ctx, getenv, stderr)
	case "migrate":
		return migrate(ctx, getenv, stdout)
	case "console":
		return console.Run(ctx, console.Options{Getenv: getenv, In: stdin, Out: stdout, Log: stderr, Version: version})
	case "version", "--version":
		_, err := fmt.Fprintln(stdout, "gpubot", version)
		return err
	case "healthcheck":
		return healthcheck(ctx, getenv)
	case "help", "-h", "--help":
		_, err := io.WriteString(stdout, usage)
		if err == nil {
			err = config.Usage(stdout)
		}
		return err
	}
	return usageError{fmt.Errorf("unknown command %q\n%s", cmd, usage)}
}

func serve(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.SlogLevel()}))
	gpubot, err := app.New(cfg, app.Options{Version: version, Logger: log})
	if err != nil {
		return err
	}
	return gpubot.Run(ctx)
}

// migrate moves a team from one replica on the bbolt file to replicas on etcd.
func migrate(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	settings, err := config.LoadMigration(getenv)
	if err != nil {
		return err
	}
	return app.Migrate(ctx, settings, stdout)
}

// healthcheck asks the local /healthz, so a container needs no curl.
func healthcheck(ctx context.Context, getenv func(string) string) error {
	addr := getenv("HTTP_ADDR")
	switch addr {
	case "":
		addr = ":8080"
	case "off":
		return usageError{errors.New("healthcheck: HTTP_ADDR=off, so there is no /healthz to ask")}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return metrics.Probe(ctx, http.DefaultClient, addr, "/healthz")
}
