package handlers

import (
	"slices"
	"strings"
	"time"
)

// Policy says who may do what. It knows people by their Slack user ids, and user
// groups by the members its group cache last read, so it can be tested on its own.
type Policy struct {
	approvers        people
	admins           people
	approvalRequired map[string]bool
	approvalsNeeded  map[string]int
	DefaultLifetime  time.Duration
	MaxLifetime      time.Duration
	// groups holds the members of the user groups above; nil knows no members, so a
	// group then counts as empty, never as everyone.
	groups *groupCache
}

// people is a setting's list of people: user ids, and user group ids (S…) that stand
// for their members.
type people struct {
	users  map[string]bool
	groups []string
}

func peopleOf(ids []string) people {
	p := people{users: map[string]bool{}}
	for _, id := range ids {
		if isGroupID(id) {
			p.groups = append(p.groups, id)
		} else {
			p.users[id] = true
		}
	}
	return p
}

// isGroupID says whether an id names a Slack user group rather than a person.
func isGroupID(id string) bool { return strings.HasPrefix(id, "S") }

// includes says whether user is one of the people, directly or through a group.
func (p people) includes(user string, groups *groupCache) bool {
	if p.users[user] {
		return true
	}
	for _, g := range p.groups {
		if groups.has(g, user) {
			return true
		}
	}
	return false
}

// NewPolicy builds a Policy from the settings. approvers and admins may name user groups.
func NewPolicy(approvers, admins, approvalRequired []string, defaultLifetime, maxLifetime time.Duration) Policy {
	return Policy{
		approvers:        peopleOf(approvers),
		admins:           peopleOf(admins),
		approvalRequired: setOf(approvalRequired),
		DefaultLifetime:  defaultLifetime,
		MaxLifetime:      maxLifetime,
	}
}

// WithApprovalsNeeded sets how many distinct approvals each type needs (1 for a type
// not named).
func (p Policy) WithApprovalsNeeded(needed map[string]int) Policy {
	p.approvalsNeeded = needed
	return p
}

func setOf(items []string) map[string]bool {
	set := make(map[string]bool, len(items))
	for _, item := range items {
		set[item] = true
	}
	return set
}

func (p Policy) IsAdmin(user string) bool    { return p.admins.includes(user, p.groups) }
func (p Policy) IsApprover(user string) bool { return p.approvers.includes(user, p.groups) }

// NeedsApproval says whether a request for this type waits for an approver.
func (p Policy) NeedsApproval(instanceType string) bool { return p.approvalRequired[instanceType] }

// ApprovalsNeeded is how many different approvers must approve a request for this type.
func (p Policy) ApprovalsNeeded(instanceType string) int {
	if n := p.approvalsNeeded[instanceType]; n > 1 {
		return n
	}
	return 1
}

// userGroups lists every user group the settings name, each once.
func (p Policy) userGroups() []string {
	var all []string
	for _, g := range slices.Concat(p.approvers.groups, p.admins.groups) {
		if !slices.Contains(all, g) {
			all = append(all, g)
		}
	}
	return all
}

// AdminUsers lists every admin by user id: those named, and the members of named groups.
func (p Policy) AdminUsers() []string { return p.usersOf(p.admins) }

// ApproverUsers lists every approver by user id: those named, and the members of named groups.
func (p Policy) ApproverUsers() []string { return p.usersOf(p.approvers) }

func (p Policy) usersOf(who people) []string {
	set := map[string]bool{}
	for u := range who.users {
		set[u] = true
	}
	for _, g := range who.groups {
		for _, u := range p.groups.members(g) {
			set[u] = true
		}
	}
	return sortedKeys(set)
}

// MayDecide refuses anyone who is not an approver, and an approver deciding their own request.
func (p Policy) MayDecide(user, requester string) error {
	if !p.IsApprover(user) {
		return refusef("Only approvers can approve or deny GPU requests. Ask one of them (%s) in this channel.", p.approverMentions(nil))
	}
	if user == requester {
		if len(without(p.approvers.users, user)) == 0 && len(p.approvers.groups) == 0 {
			return refusef("You can't decide on your own request, and there is no other approver: ask an admin to add one to APPROVERS.")
		}
		return refusef("You can't decide on your own request: another approver has to. Ask one of them (%s).", p.approverMentions(map[string]bool{user: true}))
	}
	return nil
}

// MayManage allows a machine's owner and the admins to delete or extend it.
func (p Policy) MayManage(user, owner string) error {
	if user == owner || p.IsAdmin(user) {
		return nil
	}
	return refusef("That machine belongs to <@%s>: only they or an admin can change it. `/gpu list` shows your own machines.", owner)
}

// MayWithdraw allows only the requester to withdraw a request that waits for approval.
func (p Policy) MayWithdraw(user, owner string) error {
	if user == owner {
		return nil
	}
	if p.IsAdmin(user) {
		return refusef("Only <@%s>, who asked for it, can withdraw that request. As an admin you can end it with `/gpu delete <id>`.", owner)
	}
	return refusef("Only <@%s>, who asked for it, can withdraw that request. Approvers decide on it with the card's buttons; `/gpu list` shows your own requests.", owner)
}

// MaySee allows a machine's owner, the approvers and the admins to see its details.
func (p Policy) MaySee(user, owner string) error {
	if user == owner || p.IsAdmin(user) || p.IsApprover(user) {
		return nil
	}
	return refusef("That machine belongs to <@%s>, so I can't show it to you. `/gpu list` shows your own machines.", owner)
}

// MaySeeAll allows admins and approvers to list everyone's machines.
func (p Policy) MaySeeAll(user string) error {
	if p.IsAdmin(user) || p.IsApprover(user) {
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

func sortedKeys(set map[string]bool) []string {
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// approverMentions mentions the approvers, leaving out the users in skip: each
// person named in APPROVERS, then each group as a group (Slack notifies its
// members), rather than listing the group's people.
func (p Policy) approverMentions(skip map[string]bool) string {
	var mentions []string
	for _, u := range sortedKeys(p.approvers.users) {
		if !skip[u] {
			mentions = append(mentions, "<@"+u+">")
		}
	}
	for _, g := range p.approvers.groups {
		mentions = append(mentions, "<!subteam^"+g+">")
	}
	if len(mentions) == 0 {
		return "no approvers are configured: tell an admin"
	}
	return strings.Join(mentions, ", ")
}
