package spend

import (
	"maps"
	"slices"
	"strings"
)

// DefaultBudget is the key in MONTHLY_BUDGETS of the figure for everyone without their own.
const DefaultBudget = "default"

// Budgets are the monthly budgets in USD from MONTHLY_BUDGETS: a default for each user
// without their own figure, figures for users (U…), and figures for user groups (S…),
// whose members' spend adds up against the group's.
type Budgets struct {
	defaultBudget float64
	hasDefault    bool
	users         map[string]float64
	groups        map[string]float64
}

// NewBudgets reads the figures by key: "default", a user id, or a user group id (S…).
func NewBudgets(figures map[string]float64) Budgets {
	b := Budgets{users: map[string]float64{}, groups: map[string]float64{}}
	for key, usd := range figures {
		switch {
		case key == DefaultBudget:
			b.defaultBudget, b.hasDefault = usd, true
		case strings.HasPrefix(key, "S"):
			b.groups[key] = usd
		default:
			b.users[key] = usd
		}
	}
	return b
}

// Set says whether any budget is set.
func (b Budgets) Set() bool { return b.hasDefault || len(b.users) > 0 || len(b.groups) > 0 }

// Groups lists the user groups that have a budget, sorted.
func (b Budgets) Groups() []string { return slices.Sorted(maps.Keys(b.groups)) }

// Limit is one budget a person is held to: their own (Group empty) or a group's.
type Limit struct {
	Group  string // the user group whose budget it is; "" for the person's own
	Budget float64
	// Default says the person's own figure is MONTHLY_BUDGETS' default.
	Default bool
}

// LimitsFor lists the budgets user is held to, given the budgeted groups they are in:
// their own figure where they have one, each group's, and the default only when
// neither applies. No limit means no budget.
func (b Budgets) LimitsFor(user string, groups []string) []Limit {
	var limits []Limit
	if usd, ok := b.users[user]; ok {
		limits = append(limits, Limit{Budget: usd})
	}
	for _, g := range slices.Sorted(slices.Values(groups)) {
		if usd, ok := b.groups[g]; ok {
			limits = append(limits, Limit{Group: g, Budget: usd})
		}
	}
	if len(limits) == 0 && b.hasDefault {
		limits = append(limits, Limit{Budget: b.defaultBudget, Default: true})
	}
	return limits
}

// Standing is where one limit stands this month: what its people have spent (or
// committed), and what a request would add.
type Standing struct {
	Limit
	Spent float64
	Adds  float64
}

// Over says whether spent plus what is added passes the budget (by more than a cent's
// rounding).
func (s Standing) Over() bool { return s.Spent+s.Adds > s.Budget+0.005 }

// Left is what remains of the budget once what is added is spent; negative when over.
func (s Standing) Left() float64 { return s.Budget - s.Spent - s.Adds }

// Share is the part of the budget spent (with what is added), 1 for all of it.
func (s Standing) Share() float64 {
	if s.Budget <= 0 {
		if s.Spent+s.Adds > 0 {
			return 1e9
		}
		return 0
	}
	return (s.Spent + s.Adds) / s.Budget
}

// Check weighs adds against each limit, with spentBy telling what a limit's people
// have committed this month, and returns the standings that it would take over budget.
func Check(limits []Limit, spentBy func(Limit) float64, adds float64) []Standing {
	var over []Standing
	for _, l := range limits {
		s := Standing{Limit: l, Spent: spentBy(l), Adds: adds}
		if s.Over() {
			over = append(over, s)
		}
	}
	return over
}
