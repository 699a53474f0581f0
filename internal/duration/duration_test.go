package duration

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseAcceptsGoDurationsAndDays(t *testing.T) {
	for text, want := range map[string]time.Duration{
		"90m":               90 * time.Minute,
		"4h":                4 * time.Hour,
		"1h30m":             90 * time.Minute,
		"2d":                48 * time.Hour,
		"1d12h":             36 * time.Hour,
		"1.5d":              36 * time.Hour,
		"2D":                48 * time.Hour,
		" 8h ":              8 * time.Hour,
		"100ms":             100 * time.Millisecond,
		"10s":               10 * time.Second,
		"1.5h":              90 * time.Minute,
		".5h":               30 * time.Minute,
		"1h0m0.5s":          time.Hour + 500*time.Millisecond,
		"3us":               3 * time.Microsecond,
		"3µs":               3 * time.Microsecond,
		"3μs":               3 * time.Microsecond,
		"7ns":               7,
		"0":                 0,
		"0s":                0,
		"-1h":               -time.Hour,
		"+2h":               2 * time.Hour,
		"1.d.5h":            24*time.Hour + 30*time.Minute, // Go's grammar allows "1." and ".5"
		"365d":              Max,
		"8760h":             Max,
		"1d2h3m4s5ms6us7ns": 24*time.Hour + 2*time.Hour + 3*time.Minute + 4*time.Second + 5*time.Millisecond + 6*time.Microsecond + 7,
	} {
		got, err := Parse(text)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", text, got, err, want)
		}
	}
}

func TestParseRefusesWhatIsNotADuration(t *testing.T) {
	for _, text := range []string{"", "8", "h", "forever", "1x", "1h 30m", "1..5h", "-", "1hh", "d", "--1h", "1h-1m"} {
		if _, err := Parse(text); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) error = %v, want ErrSyntax", text, err)
		}
	}
}

// Item: a duration that would overflow when added to a time or to another duration
// is refused where it is read, so no caller ever holds one.
func TestParseRefusesWhatIsLongerThanMax(t *testing.T) {
	for _, text := range []string{"2562047h", "2562048h", "9999999999999999999999h", "366d", "8761h", "365d1ns", "-366d", "106751d", "1e3h"} {
		_, err := Parse(text)
		if text == "1e3h" {
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("Parse(%q) error = %v, want ErrSyntax", text, err)
			}
			continue
		}
		if !errors.Is(err, ErrTooLong) {
			t.Errorf("Parse(%q) error = %v, want ErrTooLong", text, err)
		}
	}
	if !strings.Contains(ErrTooLong.Error(), Format(Max)) {
		t.Errorf("ErrTooLong = %q, want it to name the largest accepted value %s", ErrTooLong, Format(Max))
	}
	// Two of the largest accepted durations, added to any time gpubot meets, stay in range.
	far := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := far.Add(Max + Max); !got.After(far) {
		t.Errorf("%v + 2×Max = %v, not later", far, got)
	}
	if Max+Max < 0 || Max+Max > math.MaxInt64/2 {
		t.Errorf("2×Max overflows")
	}
}

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                          "0s",
		4 * time.Hour:              "4h",
		90 * time.Minute:           "1h30m",
		72 * time.Hour:             "3d",
		51 * time.Hour:             "2d3h",
		25*time.Hour + time.Minute: "1d1h1m",
		10 * time.Second:           "10s",
		100 * time.Millisecond:     "100ms",
		1500 * time.Millisecond:    "1.5s",
		time.Hour + 5*time.Second:  "1h5s",
		-90 * time.Minute:          "-1h30m",
		3 * time.Microsecond:       "3µs",
	} {
		if got := Format(d); got != want {
			t.Errorf("Format(%v) = %q, want %q", d, got, want)
		}
	}
}

// FuzzParse: Parse never panics, never returns more than Max, and what Format writes
// Parse reads back exactly.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{"90m", "2d", "1d12h", "100ms", "0", "-1h", "2562047h", "1.5d", ".5h", "365d", "9999999999999999999999ns", "1.00000000000000000001h", "µs"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		d, err := Parse(text)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrTooLong) {
				t.Fatalf("Parse(%q) error %v is neither ErrSyntax nor ErrTooLong", text, err)
			}
			return
		}
		if d > Max || d < -Max {
			t.Fatalf("Parse(%q) = %v, beyond ±Max", text, d)
		}
		back, err := Parse(Format(d))
		if err != nil || back != d {
			t.Fatalf("Parse(Format(%v)) = %v, %v (Format gave %q)", d, back, err, Format(d))
		}
	})
}
