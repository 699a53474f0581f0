package spend

import (
	"fmt"
	"time"
)

// Month is a calendar month in UTC: budgets and reports count by it.
type Month struct {
	Year  int
	Month time.Month
}

// MonthOf is the month (UTC) that t falls in.
func MonthOf(t time.Time) Month {
	t = t.UTC()
	return Month{Year: t.Year(), Month: t.Month()}
}

// ParseMonth reads a month written YYYY-MM, as `/gpu report 2026-03` takes it.
func ParseMonth(s string) (Month, error) {
	t, err := time.Parse("2006-01", s)
	if err != nil {
		return Month{}, fmt.Errorf("%q is not a month written YYYY-MM", s)
	}
	return MonthOf(t), nil
}

// Start is the first moment of the month.
func (m Month) Start() time.Time { return time.Date(m.Year, m.Month, 1, 0, 0, 0, 0, time.UTC) }

// Window is the month as a span of time.
func (m Month) Window() Window { return Window{From: m.Start(), To: m.Next().Start()} }

// Next is the month after m.
func (m Month) Next() Month { return MonthOf(m.Start().AddDate(0, 1, 0)) }

// Previous is the month before m.
func (m Month) Previous() Month { return MonthOf(m.Start().AddDate(0, -1, 0)) }

// String is YYYY-MM.
func (m Month) String() string { return m.Start().Format("2006-01") }

// Name is how people read the month: "March 2026".
func (m Month) Name() string { return m.Start().Format("January 2006") }
