package handlers

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/fal"
)

// scriptedGroups answers usergroups.users.list from a script a test changes: the
// corners slacksim reaches only slowly (a read that fails for a passing reason after
// slack-go's retries).
type scriptedGroups struct {
	mu      sync.Mutex
	members []string
	err     error
	reads   int
}

func (g *scriptedGroups) GroupMembers(context.Context, string) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reads++
	return g.members, g.err
}

func (g *scriptedGroups) answer(members []string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members, g.err = members, err
}

// A group is read again once USERGROUP_REFRESH has passed, not before; a read that
// fails for a passing reason keeps the members last read; a refused read empties the
// group and alerts the admins once, however often it repeats.
func TestRefreshGroupsKeepsWhatIsKnownAndEmptiesWhatIsRefused(t *testing.T) {
	now := goldenNow
	clock := func() time.Time { return now }
	groups := &scriptedGroups{members: []string{"UDAVE"}}
	slackCalls := &recordingSlack{}
	h := New(Config{
		Policy:           NewPolicy([]string{"S0APPROVE"}, []string{"UADMIN"}, []string{fal.Type8xH100}, time.Hour, 72*time.Hour),
		ApprovalChannel:  "CAPPROVALS",
		PollInterval:     time.Second,
		UsergroupRefresh: time.Hour,
		Groups:           groups,
	}, fuzzStore(t), &recordingFal{}, slackCalls, slog.New(slog.NewTextHandler(io.Discard, nil)), clock)
	ctx := context.Background()
	approves := func() bool { return h.cfg.Policy.MayDecide("UDAVE", "UALICE") == nil }

	if approves() {
		t.Fatal("a group member approves before the group was read")
	}
	h.refreshGroups(ctx)
	if !approves() {
		t.Fatal("a group member cannot approve once the group was read")
	}
	groups.answer(nil, nil) // dave leaves
	now = now.Add(59 * time.Minute)
	h.refreshGroups(ctx)
	if groups.reads != 1 || !approves() {
		t.Fatalf("read %d times before USERGROUP_REFRESH passed (want 1); dave approves: %v", groups.reads, approves())
	}

	groups.answer(nil, slack.StatusCodeError{Code: 503, Status: "503 Service Unavailable"})
	now = now.Add(time.Hour)
	h.refreshGroups(ctx)
	if !approves() || slackCalls.calls != 0 {
		t.Fatalf("after a 503: dave approves %v (want the last members kept), %d Slack calls (want no alert)", approves(), slackCalls.calls)
	}
	now = now.Add(groupRetry)
	h.refreshGroups(ctx)
	if groups.reads != 3 {
		t.Fatalf("%d reads; want a read failed for a passing reason tried again after %s, not a whole refresh period", groups.reads, groupRetry)
	}

	groups.answer(nil, slack.SlackErrorResponse{Err: "no_such_subteam"})
	for range 3 {
		now = now.Add(time.Hour)
		h.refreshGroups(ctx)
	}
	if groups.reads != 6 || approves() {
		t.Fatalf("after refusals: %d reads (want 6), dave approves %v (want an empty group)", groups.reads, approves())
	}
	if slackCalls.calls != 2 { // open the admin's DM, post the alert
		t.Fatalf("%d Slack calls for three refusals, want one alert (2 calls)", slackCalls.calls)
	}
}
