package spend

import (
	"math"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
)

const (
	oneX   = "gpu_1x_h100_sxm5"
	eightX = "gpu_8x_h100_sxm5"
)

var prices = Prices{oneX: 2.5, eightX: 20}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func near(got, want float64) bool { return math.Abs(got-want) < 1e-9 }

// ended is a machine that was ready from ready to end, then deleted.
func ended(id, user, typ, ready, end string) domain.Request {
	return domain.Request{ID: id, UserID: user, InstanceType: typ, State: domain.StateDeleted,
		ReadyAt: at(ready), EndedAt: at(end), Version: 5}
}

func running(id, user, typ, ready, expires string) domain.Request {
	return domain.Request{ID: id, UserID: user, InstanceType: typ, State: domain.StateReady,
		ReadyAt: at(ready), ExpiresAt: at(expires), Lifetime: at(expires).Sub(at(ready)), Version: 3}
}

func TestMachineAcrossMonthEndCountsInEachMonth(t *testing.T) {
	r := ended("a", "UALICE", eightX, "2026-03-31T20:00:00Z", "2026-04-01T06:00:00Z")
	now := at("2026-04-02T00:00:00Z")
	march := prices.Usage(r, Month{2026, time.March}.Window(), now, SoFar)
	april := prices.Usage(r, Month{2026, time.April}.Window(), now, SoFar)
	if !near(march.Hours, 4) || !near(march.Cost, 80) {
		t.Errorf("March: %v h, $%v; want 4 h, $80", march.Hours, march.Cost)
	}
	if !near(april.Hours, 6) || !near(april.Cost, 120) {
		t.Errorf("April: %v h, $%v; want 6 h, $120", april.Hours, april.Cost)
	}
	if got := prices.MachineCost(r, now); got != "$200.00" {
		t.Errorf("whole life costs %s, want $200.00", got)
	}
	if may := prices.Usage(r, Month{2026, time.May}.Window(), now, SoFar); may.Ran || may.Cost != 0 {
		t.Errorf("May counts %+v; the machine never ran then", may)
	}
}

func TestRunningMachineCountsToNowOrToItsExpiry(t *testing.T) {
	r := running("a", "UALICE", oneX, "2026-03-10T08:00:00Z", "2026-03-10T16:00:00Z")
	now := at("2026-03-10T10:00:00Z")
	march := Month{2026, time.March}.Window()
	if u := prices.Usage(r, march, now, SoFar); !near(u.Hours, 2) || !near(u.Cost, 5) || !u.StillRuns {
		t.Errorf("so far: %+v; want 2 h and $5, still running", u)
	}
	if u := prices.Usage(r, march, now, Committed); !near(u.Hours, 8) || !near(u.Cost, 20) {
		t.Errorf("committed: %v h, $%v; want 8 h, $20 (to its expiry)", u.Hours, u.Cost)
	}
	// Past its expiry but not yet deleted, it costs until now.
	late := at("2026-03-10T17:00:00Z")
	if u := prices.Usage(r, march, late, Committed); !near(u.Hours, 9) {
		t.Errorf("committed after the expiry: %v h, want 9", u.Hours)
	}
	// A machine being deleted runs until fal deletes it, not to its expiry.
	deleting := r
	deleting.State = domain.StateDeleting
	if u := prices.Usage(deleting, march, now, Committed); !near(u.Hours, 2) {
		t.Errorf("being deleted: %v h, want 2", u.Hours)
	}
}

func TestMachineDeletedEarlyCostsOnlyItsRun(t *testing.T) {
	// Asked for 8 h, deleted after 90 minutes.
	r := ended("a", "UALICE", eightX, "2026-03-10T08:00:00Z", "2026-03-10T09:30:00Z")
	r.Lifetime, r.ExpiresAt = 8*time.Hour, at("2026-03-10T16:00:00Z")
	u := prices.Usage(r, Month{2026, time.March}.Window(), at("2026-03-20T00:00:00Z"), Committed)
	if !near(u.Hours, 1.5) || !near(u.Cost, 30) || u.StillRuns {
		t.Errorf("%+v; want 1.5 h, $30, ended", u)
	}
}

func TestMachineGoneAtFalCostsUntilItWasSeenGone(t *testing.T) {
	r := ended("a", "UALICE", oneX, "2026-03-10T08:00:00Z", "2026-03-10T12:00:00Z")
	r.State = domain.StateGone
	if got := prices.MachineCost(r, at("2026-03-11T00:00:00Z")); got != "$10.00" {
		t.Errorf("gone machine costs %s, want $10.00", got)
	}
}

func TestMachineNeverReadyCostsNothing(t *testing.T) {
	failed := domain.Request{ID: "a", UserID: "UALICE", InstanceType: eightX, State: domain.StateFailed,
		Lifetime: 8 * time.Hour, EndedAt: at("2026-03-10T09:00:00Z")}
	now := at("2026-03-10T10:00:00Z")
	for _, basis := range []Basis{SoFar, Committed} {
		if u := prices.Usage(failed, Month{2026, time.March}.Window(), now, basis); u.Ran || u.Cost != 0 {
			t.Errorf("basis %d: a machine that never became ready counts %+v", basis, u)
		}
	}
	if got := prices.MachineCost(failed, now); got != "" {
		t.Errorf("never ready shows a cost %q", got)
	}
	// One still being made costs nothing so far, and its whole lifetime once committed.
	waiting := domain.Request{ID: "b", UserID: "UALICE", InstanceType: eightX, State: domain.StateProvisioning, Lifetime: 4 * time.Hour}
	if u := prices.Usage(waiting, Always, now, SoFar); u.Ran {
		t.Errorf("provisioning counts %+v so far", u)
	}
	if u := prices.Usage(waiting, Always, now, Committed); !near(u.Cost, 80) {
		t.Errorf("provisioning commits $%v, want $80 (4 h at $20)", u.Cost)
	}
}

func TestNoPriceGivesNoFigure(t *testing.T) {
	r := ended("a", "UALICE", oneX, "2026-03-10T08:00:00Z", "2026-03-10T12:00:00Z")
	none := Prices{eightX: 20}
	u := none.Usage(r, Always, at("2026-03-11T00:00:00Z"), SoFar)
	if !u.Unpriced || !near(u.Hours, 4) || u.Cost != 0 {
		t.Errorf("%+v; want 4 h and no price", u)
	}
	if got := none.MachineCost(r, at("2026-03-11T00:00:00Z")); got != "" {
		t.Errorf("cost without a price: %q, want none", got)
	}
	if got := none.Cost(oneX, time.Hour); got != "" {
		t.Errorf("Cost without a price: %q", got)
	}
	if _, ok := none.EstimateUSD(oneX, time.Hour); ok {
		t.Error("an estimate without a price")
	}
	s := Summarize([]domain.Request{r}, none, Always, at("2026-03-11T00:00:00Z"), SoFar)
	if s.Total.Unpriced != 1 || s.Total.Cost != 0 || !near(s.Total.Hours, 4) {
		t.Errorf("summary %+v; want its hours, no cost, one unpriced machine", s.Total)
	}
}

func TestSummaryByUserAndTypeCountsEachRequestOnce(t *testing.T) {
	now := at("2026-03-20T00:00:00Z")
	live := running("b", "UBOB", oneX, "2026-03-19T20:00:00Z", "2026-03-20T04:00:00Z")
	endedLater := live
	endedLater.State, endedLater.EndedAt, endedLater.Version = domain.StateDeleted, at("2026-03-19T22:00:00Z"), 9
	reqs := []domain.Request{
		ended("a", "UALICE", eightX, "2026-03-10T08:00:00Z", "2026-03-10T10:00:00Z"),
		ended("c", "UALICE", oneX, "2026-03-11T08:00:00Z", "2026-03-11T12:00:00Z"),
		live, endedLater, // read live, then again once ended: counted once, as ended
		ended("d", "UBOB", oneX, "2026-02-11T08:00:00Z", "2026-02-11T12:00:00Z"), // February
	}
	s := Summarize(reqs, prices, Month{2026, time.March}.Window(), now, SoFar)
	if s.Total.Machines != 3 || !near(s.Total.Cost, 40+10+5) {
		t.Fatalf("total %+v; want 3 machines, $55", s.Total)
	}
	if a := s.ByUser["UALICE"]; a.Machines != 2 || !near(a.Cost, 50) || !near(a.Hours, 6) {
		t.Errorf("alice %+v; want 2 machines, 6 h, $50", a)
	}
	if b := s.ByUser["UBOB"]; !near(b.Hours, 2) {
		t.Errorf("bob %+v; want the 2 h the machine ran before it ended", b)
	}
	if x := s.ByType[oneX]; x.Machines != 2 || !near(x.Cost, 15) {
		t.Errorf("1x %+v; want 2 machines, $15", x)
	}
	rank := Ranking(s.ByUser)
	if rank[0].Key != "UALICE" || rank[1].Key != "UBOB" {
		t.Errorf("ranking %+v; alice spent most", rank)
	}
	if s.Rows[0].Request.ID != "a" || s.Rows[2].Request.ID != "b" {
		t.Errorf("rows not in the order they became ready: %v, %v", s.Rows[0].Request.ID, s.Rows[2].Request.ID)
	}
}

func TestUSD(t *testing.T) {
	for amount, want := range map[float64]string{0: "$0.00", 12.5: "$12.50", 1850: "$1,850.00", 1234567.891: "$1,234,567.89", -160: "-$160.00", 999.999: "$1,000.00"} {
		if got := USD(amount); got != want {
			t.Errorf("USD(%v) = %s, want %s", amount, got, want)
		}
	}
	if got := prices.Estimate(eightX, 8*time.Hour); got != "$160.00 ($20.00/h × 8h)" {
		t.Errorf("estimate %q", got)
	}
}

func TestMonths(t *testing.T) {
	m, err := ParseMonth("2026-01")
	if err != nil || m.Previous().String() != "2025-12" || m.Next().String() != "2026-02" || m.Name() != "January 2026" {
		t.Fatalf("%v %v: previous %s, next %s, name %s", m, err, m.Previous(), m.Next(), m.Name())
	}
	for _, bad := range []string{"2026-13", "26-01", "March", "2026-1-1", ""} {
		if _, err := ParseMonth(bad); err == nil {
			t.Errorf("ParseMonth(%q) accepted", bad)
		}
	}
	if got := MonthOf(at("2026-03-31T23:59:59-05:00")); got.String() != "2026-04" {
		t.Errorf("a time is placed in its UTC month: got %s", got)
	}
}

func TestBudgetLimits(t *testing.T) {
	b := NewBudgets(map[string]float64{"default": 500, "UALICE": 2000, "S0ML": 10000})
	if got := b.LimitsFor("UCAROL", nil); len(got) != 1 || got[0].Budget != 500 || !got[0].Default {
		t.Errorf("carol, in no group, has %+v; want the default", got)
	}
	if got := b.LimitsFor("UALICE", nil); len(got) != 1 || got[0].Budget != 2000 {
		t.Errorf("alice has %+v; want her own", got)
	}
	if got := b.LimitsFor("UDAVE", []string{"S0ML"}); len(got) != 1 || got[0].Group != "S0ML" {
		t.Errorf("dave in the group has %+v; want only the group's", got)
	}
	if got := b.LimitsFor("UALICE", []string{"S0ML"}); len(got) != 2 {
		t.Errorf("alice in the group has %+v; want her own and the group's", got)
	}
	if got := NewBudgets(map[string]float64{"UALICE": 1}).LimitsFor("UCAROL", nil); len(got) != 0 {
		t.Errorf("without a default, carol has %+v", got)
	}
	spent := func(l Limit) float64 {
		if l.Group != "" {
			return 9900
		}
		return 1850
	}
	over := Check(b.LimitsFor("UALICE", []string{"S0ML"}), spent, 160)
	if len(over) != 2 || !near(over[0].Left(), -10) || over[1].Group != "S0ML" {
		t.Errorf("over %+v; want both: her own by $10 and the group's", over)
	}
	if over := Check(b.LimitsFor("UALICE", nil), spent, 150); len(over) != 0 {
		t.Errorf("exactly at the budget counts as over: %+v", over)
	}
}

func TestScheduleLastEnded(t *testing.T) {
	monday9 := at("2026-03-02T09:00:00Z") // a Monday
	cases := []struct {
		s         Schedule
		now       time.Time
		wantStart time.Time
	}{
		{Weekly, monday9, monday9.AddDate(0, 0, -7)},
		{Weekly, monday9.Add(-time.Second), monday9.AddDate(0, 0, -14)},
		{Weekly, at("2026-03-05T12:00:00Z"), monday9.AddDate(0, 0, -7)},
		{Daily, at("2026-03-05T08:59:59Z"), at("2026-03-03T09:00:00Z")},
		{Daily, at("2026-03-05T09:00:00Z"), at("2026-03-04T09:00:00Z")},
		{Every(10 * time.Second), time.Unix(1_000_000_005, 0), time.Unix(999_999_990, 0)},
	}
	for _, c := range cases {
		w := c.s.LastEnded(c.now)
		if !w.From.Equal(c.wantStart) || w.To.Sub(w.From) != c.s.Every || w.To.After(c.now) {
			t.Errorf("LastEnded(%s) with every %s = [%s, %s); want it to start %s", c.now, c.s.Every, w.From, w.To, c.wantStart)
		}
	}
	if w := Weekly.LastEnded(at("2026-03-04T00:00:00Z")); w.To.Weekday() != time.Monday || w.To.Hour() != 9 {
		t.Errorf("weekly periods end %s, want Mondays 09:00 UTC", w.To)
	}
}
