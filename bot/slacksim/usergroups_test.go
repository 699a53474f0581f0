package slacksim

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"
)

// usergroups.users.list answers a group's members as they are now, and Slack's own
// errors for a group it does not know and for an app without usergroups:read.
func TestUsergroupsUsersList(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)

	s.AddUsergroup("S0APPROVE", alice, bob)
	got, err := api.GetUserGroupMembersContext(ctx, "S0APPROVE")
	mustNoError(t, err, "list members")
	if !slices.Equal(got, []string{alice, bob}) {
		t.Fatalf("members %v, want alice and bob", got)
	}
	s.SetUsergroupMembers("S0APPROVE", bob)
	got, err = api.GetUserGroupMembersContext(ctx, "S0APPROVE")
	mustNoError(t, err, "list members after a change")
	if !slices.Equal(got, []string{bob}) {
		t.Fatalf("members after alice left %v, want bob", got)
	}

	_, err = api.GetUserGroupMembersContext(ctx, "S0NOSUCH")
	wantSlackError(t, err, "no_such_subteam")
	s.RemoveUsergroup("S0APPROVE")
	_, err = api.GetUserGroupMembersContext(ctx, "S0APPROVE")
	wantSlackError(t, err, "no_such_subteam")

	s.AddUsergroup("S0APPROVE", bob)
	s.RevokeScope("usergroups:read")
	_, err = api.GetUserGroupMembersContext(ctx, "S0APPROVE")
	var se slack.SlackErrorResponse
	if !errors.As(err, &se) || se.Err != "missing_scope" || se.Needed != "usergroups:read" || strings.Contains(se.Provided, "usergroups:read") {
		t.Fatalf("without usergroups:read: %#v, want missing_scope needing usergroups:read", err)
	}
	if _, _, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("still allowed", false)); err != nil {
		t.Fatalf("a method needing another scope failed: %v", err)
	}
	s.GrantScope("usergroups:read")
	_, err = api.GetUserGroupMembersContext(ctx, "S0APPROVE")
	mustNoError(t, err, "list members once the scope is back")
}

// A message notifies whom it mentions: people, and the members a user group has when
// it is posted. An edit notifies nobody new, and an unknown group nobody.
func TestSubteamMentionsNotifyTheGroupsMembers(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)
	s.AddUser("UCAROL", "carol")
	s.AddUsergroup("S0APPROVE", bob, "UCAROL")

	_, ts, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("fallback", false),
		slack.MsgOptionBlocks(slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "<!subteam^S0APPROVE|@approvers> and <@UALICE>: <!subteam^S0NOSUCH> please decide", false, false), nil, nil)))
	mustNoError(t, err, "post")
	posted, err := s.WaitMessage(ctx, func(m Message) bool { return m.TS == ts })
	mustNoError(t, err, "find the message")
	if want := []string{alice, bob, "UCAROL"}; !slices.Equal(posted.Notified, want) {
		t.Fatalf("notified %v, want %v", posted.Notified, want)
	}

	s.SetUsergroupMembers("S0APPROVE", bob)
	_, _, _, err = api.UpdateMessageContext(ctx, gpuChannel, ts, slack.MsgOptionText("<!subteam^S0APPROVE> edited", false))
	mustNoError(t, err, "edit")
	_, ts2, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("<!subteam^S0APPROVE> again", false))
	mustNoError(t, err, "post again")
	again, err := s.WaitMessage(ctx, func(m Message) bool { return m.TS == ts2 })
	mustNoError(t, err, "find the second message")
	if !slices.Equal(again.Notified, []string{bob}) {
		t.Fatalf("after carol left the group, a new mention notified %v, want bob only", again.Notified)
	}
}

// chat.getPermalink links a thread root, and a reply within its thread.
func TestChatGetPermalink(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)
	_, root, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("root", false))
	mustNoError(t, err, "post root")
	_, reply, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("reply", false), slack.MsgOptionTS(root))
	mustNoError(t, err, "post reply")

	link, err := api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: gpuChannel, Ts: root})
	mustNoError(t, err, "root's permalink")
	if want := "https://gpubot-sim.slack.com/archives/CGPU/p" + strings.ReplaceAll(root, ".", ""); link != want || s.PermalinkFor(gpuChannel, root) != want {
		t.Fatalf("root's permalink %q, want %q", link, want)
	}
	link, err = api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: gpuChannel, Ts: reply})
	mustNoError(t, err, "reply's permalink")
	if !strings.HasSuffix(link, "?thread_ts="+root+"&cid=CGPU") {
		t.Fatalf("reply's permalink %q does not name its thread", link)
	}
	_, err = api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: gpuChannel, Ts: "1.000000"})
	wantSlackError(t, err, "message_not_found")
	_, err = api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: "CNOSUCH", Ts: root})
	wantSlackError(t, err, "channel_not_found")
}
