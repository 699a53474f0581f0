package handlers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/slack-go/slack"
)

// GroupReader reads who is in a Slack user group (usergroups.users.list).
type GroupReader interface {
	GroupMembers(ctx context.Context, group string) ([]string, error)
}

// groupCache holds the members of the user groups named in APPROVERS and ADMINS as
// last read. The background pass reads each again once it is refresh old, so deciding
// who may click never waits on Slack, and a change in a group counts within one
// refresh period (and one pass) without a restart.
type groupCache struct {
	mu     sync.Mutex
	groups map[string]groupMembers
}

type groupMembers struct {
	users  map[string]bool
	readAt time.Time
}

func newGroupCache() *groupCache { return &groupCache{groups: map[string]groupMembers{}} }

// has says whether user was in group when it was last read; a group never read (or
// that Slack refused to show) has nobody in it.
func (c *groupCache) has(group, user string) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.groups[group].users[user]
}

// members lists group's members as last read, sorted.
func (c *groupCache) members(group string) []string {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedKeys(c.groups[group].users)
}

// due says whether group was never read, or was read at least refresh before now.
func (c *groupCache) due(group string, now time.Time, refresh time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, read := c.groups[group]
	return !read || now.Sub(g.readAt) >= refresh
}

// set records what a read found (nil for a group Slack refused to show).
func (c *groupCache) set(group string, users []string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.groups[group] = groupMembers{users: setOf(users), readAt: now}
}

// keep leaves the members as they were after a read that failed for a passing reason
// (Slack busy, the network), and has the next try come after retry rather than a
// whole refresh period: a group not read yet has nobody in it meanwhile.
func (c *groupCache) keep(group string, now time.Time, refresh, retry time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[group]
	g.readAt = now.Add(min(retry, refresh) - refresh)
	c.groups[group] = g
}

// groupRetry is how soon a group read that failed for a passing reason is tried again.
const groupRetry = time.Minute

// refreshGroups reads again every user group whose members are due. A refused read
// (a missing scope, a group that does not exist) empties the group, so its members
// can no longer approve or act as admins, and the admins hear once a day what to fix.
func (h *Handlers) refreshGroups(ctx context.Context) {
	if h.groupReader == nil {
		return
	}
	for _, group := range h.groupsToRead() {
		now := h.now()
		if !h.groups.due(group, now, h.cfg.UsergroupRefresh) {
			continue
		}
		users, err := h.groupReader.GroupMembers(ctx, group)
		code, refused := refusedBySlack(err)
		switch {
		case err == nil:
			h.groups.set(group, users, now)
		case ctx.Err() != nil:
			return
		case refused:
			h.groups.set(group, nil, now)
			h.log.Error("Slack refused to list a user group's members; it counts as empty", "group", group, "err", err)
			h.alertAdminsEvery(ctx, "usergroup:"+group+":"+code, 24*time.Hour, groupRefusedText(group, code))
		default:
			h.groups.keep(group, now, h.cfg.UsergroupRefresh, groupRetry)
			h.log.Warn("could not read a user group's members; keeping the last known", "group", group, "err", err)
		}
	}
}

// groupsToRead lists every user group the settings name, each once: the approvers'
// and admins' (the policy's), then those with a budget.
func (h *Handlers) groupsToRead() []string {
	groups := h.cfg.Policy.userGroups()
	for _, g := range h.cfg.Budgets.Groups() {
		if !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	return groups
}

// refusedBySlack says whether Slack answered a call with an error that asking again
// will not fix, and which.
func refusedBySlack(err error) (code string, refused bool) {
	var se slack.SlackErrorResponse
	if !errors.As(err, &se) {
		return "", false
	}
	transient := []string{"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
	return se.Err, !slices.Contains(transient, se.Err)
}

// groupRefusedText tells the admins what to fix when Slack will not list a group. It
// names the group by id: a mention would notify everyone in it.
func groupRefusedText(group, code string) string {
	fix := "check the group's ID in APPROVERS, ADMINS and MONTHLY_BUDGETS (Slack admin → User groups; the ID starts with S)"
	switch code {
	case "missing_scope":
		fix = "add the `usergroups:read` bot scope (manifest.yml asks for it) and reinstall the app"
	case "no_such_subteam", "subteam_not_found":
		fix = "Slack knows no group with that ID: fix APPROVERS, ADMINS or MONTHLY_BUDGETS with the group's ID (Slack admin → User groups; it starts with S)"
	}
	return fmt.Sprintf("Slack refused to tell me who is in user group `%s` (%s). Until that is fixed, nobody counts as a member of it: its people cannot approve or act as admins through it. To fix it, %s. (I say this at most once a day.)", group, code, fix)
}
