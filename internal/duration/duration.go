// Package duration is gpubot's one grammar for durations, shared by the `/gpu`
// commands and the settings: Go's (90m, 1h30m, 1.5h, 100ms) plus days (2d, 1d12h),
// because people size GPU machines in days.
package duration

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Max is the longest duration Parse accepts. Everything gpubot schedules is far
// shorter; with this bound, a parsed duration added to a time, or to another parsed
// duration, cannot overflow.
const Max = 365 * day

const day = 24 * time.Hour

var (
	// ErrSyntax says the text is not a duration at all.
	ErrSyntax = errors.New("not a duration; use e.g. 90m, 4h, 1h30m or 2d")
	// ErrTooLong says the text is a duration beyond Max.
	ErrTooLong = errors.New("too long: the longest accepted is " + Format(Max))
)

var units = map[string]time.Duration{
	"ns": time.Nanosecond,
	"us": time.Microsecond,
	"µs": time.Microsecond, // U+00B5 micro sign
	"μs": time.Microsecond, // U+03BC Greek mu
	"ms": time.Millisecond,
	"s":  time.Second,
	"m":  time.Minute,
	"h":  time.Hour,
	"d":  day,
}

// Parse reads a duration such as 90m, 4h, 1h30m, 2d, 1d12h, 1.5h or 100ms, in any
// case, with an optional sign; "0" needs no unit. It refuses with ErrSyntax what is
// not a duration and with ErrTooLong one beyond ±Max, so no caller ever holds a
// duration that can overflow.
func Parse(text string) (time.Duration, error) {
	s := strings.ToLower(strings.TrimSpace(text))
	negative := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		negative, s = s[0] == '-', s[1:]
	}
	if s == "0" {
		return 0, nil
	}
	if s == "" {
		return 0, ErrSyntax
	}
	var total time.Duration
	for s != "" {
		var part time.Duration
		var err error
		part, s, err = component(s)
		if err != nil {
			return 0, err
		}
		if part > Max-total {
			return 0, ErrTooLong
		}
		total += part
	}
	if negative {
		total = -total
	}
	return total, nil
}

// component reads one number and its unit ("1.5h") from the front of s.
func component(s string) (time.Duration, string, error) {
	whole, s, wholeDigits := leadingDigits(s)
	var fraction, scale uint64 = 0, 1
	fractionDigits := 0
	if s != "" && s[0] == '.' {
		fraction, scale, s, fractionDigits = leadingFraction(s[1:])
	}
	if wholeDigits == 0 && fractionDigits == 0 {
		return 0, "", ErrSyntax
	}
	end := strings.IndexFunc(s, func(r rune) bool { return r == '.' || r >= '0' && r <= '9' })
	if end < 0 {
		end = len(s)
	}
	unit, ok := units[s[:end]]
	if !ok {
		return 0, "", ErrSyntax
	}
	if whole > uint64(Max/unit) {
		return 0, "", ErrTooLong
	}
	d := time.Duration(whole) * unit
	if fraction > 0 {
		d += time.Duration(float64(fraction) * (float64(unit) / float64(scale)))
	}
	return d, s[end:], nil
}

// leadingDigits reads a whole number, saturating (at a value already far beyond Max)
// rather than overflowing.
func leadingDigits(s string) (n uint64, rest string, digits int) {
	const saturated = 1 << 62
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		if n < saturated {
			n = n*10 + uint64(s[digits]-'0')
		}
		digits++
	}
	return n, s[digits:], digits
}

// leadingFraction reads the digits after a decimal point as fraction/scale, keeping
// the first 18 (more than a nanosecond of a day needs).
func leadingFraction(s string) (fraction, scale uint64, rest string, digits int) {
	scale = 1
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		if digits < 18 {
			fraction, scale = fraction*10+uint64(s[digits]-'0'), scale*10
		}
		digits++
	}
	return fraction, scale, s[digits:], digits
}

// Format writes d the way Parse reads it, exactly and in the largest units: 4h,
// 1h30m, 3d, 2d3h, 10s, 1.5s, 100ms; "0s" for zero.
func Format(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	sign := ""
	magnitude := uint64(d)
	if d < 0 {
		sign, magnitude = "-", -magnitude
	}
	var b strings.Builder
	b.WriteString(sign)
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{day, "d"}, {time.Hour, "h"}, {time.Minute, "m"}} {
		if n := magnitude / uint64(u.unit); n > 0 {
			b.WriteString(strconv.FormatUint(n, 10) + u.name)
			magnitude %= uint64(u.unit)
		}
	}
	if magnitude > 0 {
		// Under a minute, Go's own notation is exact: 1.5s, 100ms, 3µs.
		b.WriteString(time.Duration(magnitude).String())
	}
	return b.String()
}
