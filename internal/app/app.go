// Package app assembles gpubot from its settings: it opens the store, builds the fal
// client, the Slack side and the handlers, hands each what it needs, and runs them
// until the context ends. main and the tests that run the whole program start here.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gpubot/gpubot/bot"
	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/handlers"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/leader"
	"github.com/gpubot/gpubot/internal/metrics"
	"github.com/gpubot/gpubot/internal/spend"
	"github.com/gpubot/gpubot/storage"
	"github.com/gpubot/gpubot/storage/etcdstore"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Options are what the settings do not say: the clock, the logger, and knobs for tests.
type Options struct {
	Version string
	Logger  *slog.Logger
	Now     func() time.Time // default time.Now
	// ShutdownGrace bounds how long work in flight may take to finish at shutdown.
	ShutdownGrace time.Duration
	// HomeEvery is how often at most one person's Home tab is published; default
	// handlers.DefaultHomeEvery.
	HomeEvery time.Duration
}

// App is gpubot, assembled.
type App struct {
	cfg        config.Config
	log        *slog.Logger
	store      domain.Store
	closeStore func() error
	handlers   *handlers.Handlers
	metrics    *metrics.Metrics
	bot        *bot.Bot
}

// New opens the store and builds every part. It does not connect yet: Run does.
func New(cfg config.Config, opts Options) (*App, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = 20 * time.Second
	}
	m := metrics.New()
	falClient, err := fal.New(fal.Config{
		BaseURL: cfg.FalAPIURL,
		APIKey:  cfg.FalAdminAPIKey,
		Version: opts.Version,
		Logger:  opts.Logger,
		Observe: func(op string, status int, d time.Duration) {
			m.FalCalls.WithLabelValues(op, fmt.Sprint(status)).Inc()
			m.FalLatency.WithLabelValues(op).Observe(d.Seconds())
		},
	})
	if err != nil {
		return nil, fmt.Errorf("fal client: %w", err)
	}
	store, leadership, closeStore, err := openStore(cfg, opts, m)
	if err != nil {
		return nil, err
	}
	link := bot.NewLink(bot.LinkConfig{BotToken: cfg.SlackBotToken, AppToken: cfg.SlackAppToken, APIURL: cfg.SlackAPIURL}, m)
	h := handlers.New(handlers.Config{
		Policy: handlers.NewPolicy(cfg.Approvers, cfg.Admins, cfg.ApprovalRequired, cfg.DefaultLifetime, cfg.MaxLifetime).
			WithApprovalsNeeded(cfg.ApprovalsNeeded),
		ApprovalChannel:  cfg.ApprovalChannel,
		NotifyChannel:    cfg.NotifyChannel,
		Prices:           spend.Prices(cfg.HourlyPrices),
		ReminderBefore:   cfg.ReminderBefore,
		PollInterval:     cfg.PollInterval,
		ProvisionTimeout: cfg.ProvisionTimeout,
		ApprovalTimeout:  cfg.ApprovalTimeout,
		ApprovalReminder: cfg.ApprovalReminder,
		UsergroupRefresh: cfg.UsergroupRefresh,
		Groups:           link.Groups(),
		Links:            link.Permalinks(),
		Home:             link.Homes(),
		HomeEvery:        opts.HomeEvery,
		Leadership:       leadership,
		PassDone:         countPass(m),
		Budgets:          spend.NewBudgets(cfg.MonthlyBudgets),
		Enforcement:      cfg.Enforcement,
		MaxMachines:      cfg.MaxMachines,
		ReportChannel:    cfg.ReportChannel,
		ReportEvery:      cfg.ReportEvery,
	}, store, falClient, link.WebAPI(), opts.Logger, opts.Now)
	a := &App{cfg: cfg, log: opts.Logger, store: store, closeStore: closeStore, handlers: h, metrics: m}
	a.bot = bot.New(link, h, m, bot.Options{
		HTTPAddr:      cfg.HTTPAddr,
		Logger:        opts.Logger,
		ShutdownGrace: opts.ShutdownGrace,
		Checks:        []metrics.Check{{Name: "store", Ready: a.storeReady}},
	})
	return a, nil
}

// storeTimeout bounds each call to a store shared over the network: a command's
// work must end in time for its ack to reach Slack within 3 seconds, also when
// etcd is out of reach (the user is then told nothing was done).
const storeTimeout = 1500 * time.Millisecond

// openStore opens where gpubot's state lives: the bbolt file at DB_PATH, where this
// process alone does the background work, or the etcd at ETCD_ENDPOINTS that
// replicas share, with the election they hold for the background work. close
// closes what it opened.
func openStore(cfg config.Config, opts Options, m *metrics.Metrics) (store domain.Store, leadership handlers.Leadership, close func() error, err error) {
	if !cfg.Etcd.Enabled() {
		bolt, err := storage.Open(cfg.DBPath, storage.Options{Now: opts.Now})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("open store: %w", err)
		}
		m.SetLeading(true)
		return bolt, nil, bolt.Close, nil
	}
	shared, cli, err := openEtcd(cfg.Etcd, etcdstore.Options{Now: opts.Now, Timeout: storeTimeout, SessionTTL: cfg.LeaderTTL})
	if err != nil {
		return nil, nil, nil, err
	}
	elector := leader.New(cli, leader.ElectionKey(cfg.Etcd.Prefix), cfg.LeaderTTL, replicaName(), opts.Logger, m.SetLeading)
	return shared, elector, func() error { return errors.Join(shared.Close(), cli.Close()) }, nil
}

// openEtcd connects to the etcd of settings and opens the store under its prefix.
func openEtcd(settings config.Etcd, opts etcdstore.Options) (*etcdstore.Store, *clientv3.Client, error) {
	clientConfig, err := settings.ClientConfig()
	if err != nil {
		return nil, nil, err
	}
	// The etcd client's own logs would be a second format on standard error; what
	// gpubot needs to say about etcd it logs itself.
	clientConfig.Logger = zap.NewNop()
	cli, err := clientv3.New(clientConfig)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientConfig.DialTimeout)
	defer cancel()
	store, err := etcdstore.Open(ctx, cli, settings.Prefix, opts)
	if err != nil {
		_ = cli.Close()
		return nil, nil, fmt.Errorf("open store in etcd at %s: %w", strings.Join(settings.Endpoints, ","), err)
	}
	return store, cli, nil
}

// Migrate copies the bbolt file at DB_PATH into the empty prefix of the etcd at
// ETCD_ENDPOINTS and checks the copy, saying how it goes on progress. gpubot must
// be stopped meanwhile: the file's lock makes sure of it on that side.
func Migrate(ctx context.Context, settings config.Migration, progress io.Writer) error {
	if _, err := os.Stat(settings.DBPath); err != nil {
		return fmt.Errorf("migrate: the bbolt file to copy (DB_PATH): %w", err)
	}
	from, err := storage.Open(settings.DBPath, storage.Options{})
	if err != nil {
		return fmt.Errorf("migrate: open %s: %w", settings.DBPath, err)
	}
	defer from.Close()
	to, cli, err := openEtcd(settings.Etcd, etcdstore.Options{})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer cli.Close()
	defer to.Close()
	return etcdstore.Migrate(ctx, from, to, progress)
}

// replicaName tells replicas apart in etcd and in logs: the host (a pod's name)
// and the process.
func replicaName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "gpubot"
	}
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

// countPass counts the handlers' background passes by outcome.
func countPass(m *metrics.Metrics) func(error) {
	return func(err error) {
		outcome := "ok"
		if err != nil {
			outcome = "error"
		}
		m.TrackingPasses.WithLabelValues(outcome).Inc()
	}
}

// Handlers gives tests and the console the flows gpubot runs (e.g. to drive a tracking pass).
func (a *App) Handlers() *handlers.Handlers { return a.handlers }

// Metrics gives tests gpubot's metrics.
func (a *App) Metrics() *metrics.Metrics { return a.metrics }

// Store gives tests and the console gpubot's store.
func (a *App) Store() domain.Store { return a.store }

// Run serves Slack until ctx ends (see bot.Run), keeping the requests-by-state gauges
// current meanwhile, then closes the store.
func (a *App) Run(ctx context.Context) (err error) {
	defer func() {
		if closeErr := a.closeStore(); closeErr != nil {
			err = errors.Join(err, fmt.Errorf("close store: %w", closeErr))
		}
	}()
	a.log.Info("gpubot running", "config", a.cfg)
	for _, warning := range a.cfg.Warnings() {
		a.log.Warn("setting probably not what you want", "problem", warning)
	}
	gaugeCtx, stopGauges := context.WithCancel(ctx)
	defer stopGauges()
	go a.gaugeRequests(gaugeCtx)
	return a.bot.Run(ctx)
}

// gaugeRequests keeps the requests-by-state gauges current.
func (a *App) gaugeRequests(ctx context.Context) {
	ticker := time.NewTicker(15 * time.Second)
	defer ticker.Stop()
	for {
		reqs, err := a.store.Unfinished(ctx)
		if err == nil {
			counts := map[domain.State]int{}
			for _, r := range reqs {
				counts[r.State]++
			}
			a.metrics.Requests.Reset()
			for state, n := range counts {
				a.metrics.Requests.WithLabelValues(string(state)).Set(float64(n))
			}
			a.metrics.ApprovalsWaiting.Set(float64(counts[domain.StateAwaitingApproval]))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// storeReady says whether the store answers, for /readyz.
func (a *App) storeReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	_, err := a.store.AuditLog(ctx, 0, 1)
	return err
}
