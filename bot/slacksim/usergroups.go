package slacksim

import (
	"regexp"
	"slices"
	"strings"
)

// User groups (subteams), their mentions, and the scopes a method needs.

// scopeNeeded is the bot scope each simulated method needs beyond a valid token, as
// Slack's method reference lists it. A method missing here needs none.
var scopeNeeded = map[string]string{
	"chat.postMessage":      "chat:write",
	"chat.update":           "chat:write",
	"chat.postEphemeral":    "chat:write",
	"chat.delete":           "chat:write",
	"conversations.open":    "im:write",
	"users.info":            "users:read",
	"usergroups.users.list": "usergroups:read",
}

// RevokeScope takes a bot scope away from the app, as reinstalling it without that
// scope would: the methods that need it answer missing_scope, with `needed` and
// `provided`, as Slack does.
func (s *Server) RevokeScope(scope string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revokedScopes[scope] = true
	s.notifyLocked()
}

// GrantScope gives back a scope RevokeScope took away.
func (s *Server) GrantScope(scope string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.revokedScopes, scope)
	s.notifyLocked()
}

// checkScopeLocked refuses a method whose scope was revoked.
func (s *Server) checkScopeLocked(method string) *apiError {
	needed := scopeNeeded[method]
	if needed == "" || !s.revokedScopes[needed] {
		return nil
	}
	var provided []string
	for _, scope := range scopeNeeded {
		if !s.revokedScopes[scope] && !slices.Contains(provided, scope) {
			provided = append(provided, scope)
		}
	}
	slices.Sort(provided)
	return &apiError{code: "missing_scope", fields: map[string]any{"needed": needed, "provided": strings.Join(provided, ",")}}
}

// SetUsergroupMembers changes who is in a user group, as an admin editing it in Slack.
func (s *Server) SetUsergroupMembers(id string, users ...string) { s.AddUsergroup(id, users...) }

// RemoveUsergroup deletes a user group: reading it then answers no_such_subteam.
func (s *Server) RemoveUsergroup(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.usergroups, id)
	s.notifyLocked()
}

func (s *Server) usergroupsUsersListLocked(req *apiRequest) (map[string]any, *apiError) {
	members, ok := s.usergroups[req.params["usergroup"]]
	if !ok {
		return nil, slackError("no_such_subteam")
	}
	return map[string]any{"users": append([]string{}, members...)}, nil
}

// mentionPattern finds what Slack turns into a notification in a message's text:
// <@U…> (a person) and <!subteam^S…> or <!subteam^S…|@handle> (a user group).
var mentionPattern = regexp.MustCompile(`<@([UW][A-Z0-9]+)(?:\|[^>]*)?>|<!subteam\^(S[A-Z0-9]+)(?:\|[^>]*)?>`)

// notifiedLocked lists who a newly posted message notifies, as Slack renders its
// mentions: each person mentioned, and every member of each user group mentioned, as
// the group is at that moment. A group Slack does not know notifies nobody (it
// renders as plain text). Edits notify nobody, as in Slack.
func (s *Server) notifiedLocked(text string) []string {
	var users []string
	add := func(u string) {
		if !slices.Contains(users, u) {
			users = append(users, u)
		}
	}
	for _, m := range mentionPattern.FindAllStringSubmatch(text, -1) {
		if m[1] != "" {
			add(m[1])
			continue
		}
		for _, u := range s.usergroups[m[2]] {
			add(u)
		}
	}
	slices.Sort(users)
	return users
}

// PermalinkFor is the permalink chat.getPermalink gives for a message: the thread
// root's, or a reply's with its thread.
func (s *Server) PermalinkFor(channel, ts string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.messageByTS[tsKey(channel, ts)]
	if !ok {
		return ""
	}
	return s.permalinkLocked(m)
}

func (s *Server) permalinkLocked(m *message) string {
	link := "https://" + teamDomain + ".slack.com/archives/" + m.Channel + "/p" + strings.ReplaceAll(m.TS, ".", "")
	if m.ThreadTS != "" && m.ThreadTS != m.TS {
		link += "?thread_ts=" + m.ThreadTS + "&cid=" + m.Channel
	}
	return link
}

func (s *Server) chatGetPermalinkLocked(req *apiRequest) (map[string]any, *apiError) {
	ch, err := s.channelLocked(req.params["channel"])
	if err != nil {
		return nil, err
	}
	m, ok := s.messageByTS[tsKey(ch.id, req.params["message_ts"])]
	if !ok || m.Deleted {
		return nil, slackError("message_not_found")
	}
	return map[string]any{"channel": ch.id, "permalink": s.permalinkLocked(m)}, nil
}
