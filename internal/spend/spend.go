// Package spend is the one computation of what GPU machines cost: per machine from the
// moment it was ready to its end, split by calendar month (UTC), summed by user and by
// type, and weighed against the monthly budgets. The list, a status, a thread's last
// line, the budget check, the reports and the digest all take their figures from here,
// so they agree. It knows requests and prices, nothing of Slack, fal or the store.
package spend

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/duration"
)

// Prices are the hourly prices in USD by instance type, from HOURLY_PRICES.
type Prices map[string]float64

// Cost is what running this type for d costs, as "$12.50"; "" when no price is set.
func (p Prices) Cost(instanceType string, d time.Duration) string {
	price, ok := p[instanceType]
	if !ok || d < 0 {
		return ""
	}
	return USD(price * d.Hours())
}

// Estimate is the cost of a whole lifetime, for the approval card: "$160.00 ($20.00/h × 8h)".
func (p Prices) Estimate(instanceType string, lifetime time.Duration) string {
	price, ok := p[instanceType]
	if !ok {
		return ""
	}
	return fmt.Sprintf("%s (%s/h × %s)", p.Cost(instanceType, lifetime), USD(price), duration.Format(lifetime.Round(time.Minute)))
}

// EstimateUSD is price times lifetime, and whether the type has a price at all.
func (p Prices) EstimateUSD(instanceType string, lifetime time.Duration) (float64, bool) {
	price, ok := p[instanceType]
	return price * lifetime.Hours(), ok
}

// USD shows an amount as people read money: "$1,850.00".
func USD(amount float64) string {
	sign := ""
	cents := int64(math.Round(amount * 100))
	if cents < 0 {
		sign, cents = "-", -cents
	}
	whole := strconv.FormatInt(cents/100, 10)
	var grouped strings.Builder
	for i, digit := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			grouped.WriteByte(',')
		}
		grouped.WriteRune(digit)
	}
	return fmt.Sprintf("%s$%s.%02d", sign, grouped.String(), cents%100)
}

// Basis says how far a machine that still runs is counted.
type Basis int

const (
	// SoFar counts a running machine up to now: what has been spent.
	SoFar Basis = iota
	// Committed counts a running machine up to its expiry, and a request not yet
	// ready for its whole lifetime from now: what will have been spent if nothing
	// is deleted early. Budgets are checked on this basis.
	Committed
)

// Window is a span of time [From, To); a zero end is open.
type Window struct{ From, To time.Time }

// Always is the window of a machine's whole life.
var Always = Window{}

// Span is when r's machine ran, or will run on basis: from ready to its end (deleted,
// expired, gone, failed while deleting), or to now or its expiry while it runs. ok is
// false for a machine that never ran (and, on SoFar, for one not ready yet).
func Span(r domain.Request, now time.Time, basis Basis) (start, end time.Time, ok bool) {
	switch {
	case r.ReadyAt.IsZero():
		if basis != Committed || !r.Live() || r.State == domain.StateDeleting {
			return time.Time{}, time.Time{}, false
		}
		start, end = now, now.Add(r.Lifetime)
	case !r.Live():
		start, end = r.ReadyAt, r.EndedAt
	case basis == SoFar || r.State == domain.StateDeleting:
		start, end = r.ReadyAt, now
	default:
		expiry := r.ExpiresAt
		if expiry.IsZero() {
			expiry = r.ReadyAt.Add(r.Lifetime)
		}
		start, end = r.ReadyAt, later(expiry, now)
	}
	if !end.After(start) {
		return time.Time{}, time.Time{}, false
	}
	return start, end, true
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Usage is what one machine ran and cost within a window.
type Usage struct {
	Request   domain.Request
	From, To  time.Time // the part of its run inside the window
	Hours     float64
	Cost      float64
	Unpriced  bool // HOURLY_PRICES has no price for its type: Cost is 0 and means nothing
	Ran       bool // it ran at some moment of the window
	StillRuns bool // it had not ended when the figures were taken
}

// Duration is how long the machine ran within the window.
func (u Usage) Duration() time.Duration { return u.To.Sub(u.From) }

// Usage is what r ran and cost within w, on basis.
func (p Prices) Usage(r domain.Request, w Window, now time.Time, basis Basis) Usage {
	u := Usage{Request: r, StillRuns: r.Live()}
	start, end, ok := Span(r, now, basis)
	if !ok {
		return u
	}
	if !w.From.IsZero() {
		start = later(start, w.From)
	}
	if !w.To.IsZero() && end.After(w.To) {
		end = w.To
	}
	if !end.After(start) {
		return u
	}
	u.From, u.To, u.Ran = start, end, true
	u.Hours = end.Sub(start).Hours()
	price, priced := p[r.InstanceType]
	u.Unpriced = !priced
	u.Cost = price * u.Hours
	return u
}

// MachineCost is what r's machine has cost over its whole life so far, as "$12.50";
// "" when it never ran or its type has no price. Lists, statuses and a thread's last
// line show it.
func (p Prices) MachineCost(r domain.Request, now time.Time) string {
	u := p.Usage(r, Always, now, SoFar)
	if !u.Ran || u.Unpriced {
		return ""
	}
	return USD(u.Cost)
}

// Totals add machines up.
type Totals struct {
	Machines int
	Hours    float64
	Cost     float64
	// Unpriced counts the machines whose type has no price: their hours count, their cost cannot.
	Unpriced int
}

func (t *Totals) add(u Usage) {
	t.Machines++
	t.Hours += u.Hours
	t.Cost += u.Cost
	if u.Unpriced {
		t.Unpriced++
	}
}

// Summary is the spend of a window: every machine that ran in it, and their totals by
// user and by type.
type Summary struct {
	Window Window
	Total  Totals
	ByUser map[string]Totals
	ByType map[string]Totals
	// Rows are the machines that ran in the window, the earliest first.
	Rows []Usage
}

// Summarize adds up the machines of reqs that ran within w, on basis. A request listed
// twice (read live and again once it ended) counts once, in its latest version.
func Summarize(reqs []domain.Request, prices Prices, w Window, now time.Time, basis Basis) Summary {
	s := Summary{Window: w, ByUser: map[string]Totals{}, ByType: map[string]Totals{}}
	for _, r := range Latest(reqs) {
		u := prices.Usage(r, w, now, basis)
		if !u.Ran {
			continue
		}
		s.Rows = append(s.Rows, u)
		s.Total.add(u)
		byUser, byType := s.ByUser[r.UserID], s.ByType[r.InstanceType]
		byUser.add(u)
		byType.add(u)
		s.ByUser[r.UserID], s.ByType[r.InstanceType] = byUser, byType
	}
	slices.SortStableFunc(s.Rows, func(a, b Usage) int {
		return cmp.Or(a.From.Compare(b.From), cmp.Compare(a.Request.ID, b.Request.ID))
	})
	return s
}

// Latest keeps one copy of each request, the one with the highest version, in the order
// first seen.
func Latest(reqs []domain.Request) []domain.Request {
	at := make(map[string]int, len(reqs))
	out := make([]domain.Request, 0, len(reqs))
	for _, r := range reqs {
		i, seen := at[r.ID]
		switch {
		case !seen:
			at[r.ID] = len(out)
			out = append(out, r)
		case r.Version > out[i].Version:
			out[i] = r
		}
	}
	return out
}

// Ranked is one user's or type's totals, for a ranking.
type Ranked struct {
	Key string
	Totals
}

// Ranking orders totals by cost, then hours, then key, the largest first.
func Ranking(totals map[string]Totals) []Ranked {
	out := make([]Ranked, 0, len(totals))
	for k, t := range totals {
		out = append(out, Ranked{Key: k, Totals: t})
	}
	slices.SortFunc(out, func(a, b Ranked) int {
		return cmp.Or(cmp.Compare(b.Cost, a.Cost), cmp.Compare(b.Hours, a.Hours), cmp.Compare(a.Key, b.Key))
	})
	return out
}
