package handlers

import (
	"slices"
	"time"
)

// Policy says who may do what. It knows people only by their Slack user ids, so it
// can be tested on its own.
type Policy struct {
	approvers        map[string]bool
	admins           map[string]bool
	approvalRequired map[string]bool
	DefaultLifetime  time.Duration
	MaxLifetime      time.Duration
}

// NewPolicy builds a Policy from the settings.
func NewPolicy(approvers, admins, approvalRequired []string, defaultLifetime, maxLifetime time.Duration) Policy {
	return Policy{
		approvers:        setOf(approvers),
		admins:           setOf(admins),
		approvalRequired: setOf(approvalRequired),
		DefaultLifetime:  defaultLifetime,
		MaxLifetime:      maxLifetime,
	}
}

func setOf(items []string) map[string]bool {
	set := make(map[string]bool, len(items))
	for _, item := range items {
		set[item] = true
	}
	return set
}

func (p Policy) IsAdmin(user string) bool    { return p.admins[user] }
func (p Policy) IsApprover(user string) bool { return p.approvers[user] }

// NeedsApproval says whether a request for this type waits for an approver.
func (p Policy) NeedsApproval(instanceType string) bool { return p.approvalRequired[instanceType] }

// MayDecide refuses anyone who is not an approver, and an approver deciding their own request.
func (p Policy) MayDecide(user, requester string) error {
	if !p.approvers[user] {
		return refusef("Only approvers can approve or deny GPU requests. Ask one of them (%s) in this channel.", mentionList(p.approvers))
	}
	if user == requester {
		others := without(p.approvers, user)
		if len(others) == 0 {
			return refusef("You can't decide on your own request, and there is no other approver: ask an admin to add one to APPROVERS.")
		}
		return refusef("You can't decide on your own request: another approver has to. Ask one of them (%s).", mentionList(others))
	}
	return nil
}

// MayManage allows a machine's owner and the admins to delete or extend it.
func (p Policy) MayManage(user, owner string) error {
	if user == owner || p.admins[user] {
		return nil
	}
	return refusef("That machine belongs to <@%s>: only they or an admin can change it. `/gpu list` shows your own machines.", owner)
}

// MaySee allows a machine's owner, the approvers and the admins to see its details.
func (p Policy) MaySee(user, owner string) error {
	if user == owner || p.admins[user] || p.approvers[user] {
		return nil
	}
	return refusef("That machine belongs to <@%s>, so I can't show it to you. `/gpu list` shows your own machines.", owner)
}

// MaySeeAll allows admins and approvers to list everyone's machines.
func (p Policy) MaySeeAll(user string) error {
	if p.admins[user] || p.approvers[user] {
		return nil
	}
	return refusef("Only admins and approvers can list everyone's machines. `/gpu list` shows yours.")
}

// Lifetime turns an asked-for lifetime into the one granted: the default when none
// was asked, a refusal past the maximum.
func (p Policy) Lifetime(asked time.Duration) (time.Duration, error) {
	if asked == 0 {
		return p.DefaultLifetime, nil
	}
	if asked > p.MaxLifetime {
		return 0, refusef("The longest lifetime is %s; ask for that or less (e.g. `for %s`), and extend it later with `/gpu extend` if you need more.", FormatDuration(p.MaxLifetime), FormatDuration(p.MaxLifetime))
	}
	return asked, nil
}

func without(set map[string]bool, user string) map[string]bool {
	rest := make(map[string]bool, len(set))
	for u := range set {
		if u != user {
			rest[u] = true
		}
	}
	return rest
}

func mentionList(set map[string]bool) string {
	if len(set) == 0 {
		return "no approvers are configured: tell an admin"
	}
	users := make([]string, 0, len(set))
	for u := range set {
		users = append(users, u)
	}
	slices.Sort(users)
	out := ""
	for i, u := range users {
		if i > 0 {
			out += ", "
		}
		out += "<@" + u + ">"
	}
	return out
}
