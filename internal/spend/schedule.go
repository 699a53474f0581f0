package spend

import (
	"time"
)

// Schedule cuts time into the digest's periods: each Every long, the first starting
// Offset after the Unix epoch. A zero Every is no digest.
type Schedule struct {
	Every  time.Duration
	Offset time.Duration
}

// Daily and Weekly are REPORT_EVERY's named schedules: each day at 09:00 UTC, and each
// Monday at 09:00 UTC (the epoch was a Thursday: the first Monday was 4 days later).
var (
	Daily  = Schedule{Every: 24 * time.Hour, Offset: 9 * time.Hour}
	Weekly = Schedule{Every: 7 * 24 * time.Hour, Offset: 4*24*time.Hour + 9*time.Hour}
)

// Every is a schedule of periods of length d counted from the Unix epoch.
func Every(d time.Duration) Schedule { return Schedule{Every: d} }

// Off says whether there is no digest.
func (s Schedule) Off() bool { return s.Every <= 0 }

// LastEnded is the latest period that has ended by now.
func (s Schedule) LastEnded(now time.Time) Window {
	since := now.Sub(time.Unix(0, 0).Add(s.Offset))
	k := since / s.Every // periods fully or partly past
	if since < 0 && since%s.Every != 0 {
		k--
	}
	end := time.Unix(0, 0).UTC().Add(s.Offset + k*s.Every)
	return Window{From: end.Add(-s.Every), To: end}
}
