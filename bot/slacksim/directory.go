package slacksim

import (
	"strings"
)

type user struct {
	id, name, realName, tz string
	isBot                  bool
}

type channel struct {
	id, name    string
	botIsMember bool
	dmUser      string // set for a DM: the person on the other side
}

// directory is who and where: users, channels, DMs and user groups.
type directory struct {
	users      map[string]*user
	channels   map[string]*channel
	usergroups map[string][]string
	dms        map[string]string // user id → DM channel id
	// revokedScopes are the bot scopes taken away from the app (all are granted at first).
	revokedScopes map[string]bool
}

func newDirectory() directory {
	return directory{
		users:      map[string]*user{},
		channels:   map[string]*channel{},
		usergroups: map[string][]string{},
		dms:        map[string]string{},

		revokedScopes: map[string]bool{},
	}
}

// AddUser adds (or renames) a person in the workspace.
func (s *Server) AddUser(id, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[id] = &user{id: id, name: name, realName: name, tz: "Etc/UTC"}
	s.notifyLocked()
}

// AddChannel adds a channel, or changes whether the bot is a member of it.
func (s *Server) AddChannel(id, name string, botIsMember bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.channels[id] = &channel{id: id, name: strings.TrimPrefix(name, "#"), botIsMember: botIsMember}
	s.notifyLocked()
}

// AddUsergroup sets the members of a user group (subteam).
func (s *Server) AddUsergroup(id string, users ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usergroups[id] = append([]string(nil), users...)
	s.notifyLocked()
}

// DMChannel is the D… channel of the bot's DM with user, the one conversations.open
// gives; it is the same for the life of the simulator.
func (s *Server) DMChannel(user string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dmChannelLocked(user)
}

func (s *Server) dmChannelLocked(userID string) string {
	if id, ok := s.dms[userID]; ok {
		return id
	}
	id := "D" + strings.ToUpper(userID)
	s.dms[userID] = id
	s.channels[id] = &channel{id: id, name: "directmessage", botIsMember: true, dmUser: userID}
	return id
}

func isUserID(id string) bool {
	return strings.HasPrefix(id, "U") || strings.HasPrefix(id, "W")
}

// channelLocked resolves a `channel` argument as chat.* methods do: a channel id, a
// #name, or a user id (meaning the bot's DM with that user).
func (s *Server) channelLocked(id string) (*channel, *apiError) {
	if id == "" {
		return nil, slackError("channel_not_found")
	}
	if ch, ok := s.channels[id]; ok {
		return ch, nil
	}
	if isUserID(id) {
		if _, known := s.users[id]; known {
			return s.channels[s.dmChannelLocked(id)], nil
		}
	}
	if name, ok := strings.CutPrefix(id, "#"); ok {
		for _, ch := range s.channels {
			if ch.name == name && ch.dmUser == "" {
				return ch, nil
			}
		}
	}
	return nil, slackError("channel_not_found")
}

// postableChannelLocked is channelLocked plus the membership Slack requires to post.
func (s *Server) postableChannelLocked(id string) (*channel, *apiError) {
	ch, err := s.channelLocked(id)
	if err != nil {
		return nil, err
	}
	if !ch.botIsMember {
		return nil, slackError("not_in_channel")
	}
	return ch, nil
}

func (s *Server) authTestLocked(_ *apiRequest) (map[string]any, *apiError) {
	return map[string]any{
		"url":     "https://" + teamDomain + ".slack.com/",
		"team":    teamName,
		"user":    botName,
		"team_id": s.opts.TeamID,
		"user_id": s.opts.BotUserID,
		"bot_id":  botID,
	}, nil
}

func (s *Server) conversationsOpenLocked(req *apiRequest) (map[string]any, *apiError) {
	if existing := req.params["channel"]; existing != "" {
		ch, ok := s.channels[existing]
		if !ok || ch.dmUser == "" {
			return nil, slackError("channel_not_found")
		}
		return map[string]any{"channel": map[string]any{"id": ch.id}, "no_op": true, "already_open": true}, nil
	}
	users := splitList(req.params["users"])
	switch {
	case len(users) == 0:
		return nil, slackError("users_list_not_supplied")
	case len(users) > 1:
		// Group DMs are not simulated.
		return nil, slackError("not_supported", problem("the simulator opens one-person DMs only", "/users"))
	}
	if _, known := s.users[users[0]]; !known {
		return nil, slackError("user_not_found")
	}
	_, alreadyOpen := s.dms[users[0]]
	id := s.dmChannelLocked(users[0])
	return map[string]any{
		"channel":      map[string]any{"id": id, "is_im": true, "user": users[0]},
		"no_op":        alreadyOpen,
		"already_open": alreadyOpen,
	}, nil
}

func (s *Server) usersInfoLocked(req *apiRequest) (map[string]any, *apiError) {
	if many := req.params["users"]; many != "" {
		var found []map[string]any
		for _, id := range splitList(many) {
			u, ok := s.users[id]
			if !ok {
				return nil, slackError("user_not_found")
			}
			found = append(found, s.userJSON(u))
		}
		return map[string]any{"users": found}, nil
	}
	u, ok := s.users[req.params["user"]]
	if !ok {
		return nil, slackError("user_not_found")
	}
	return map[string]any{"user": s.userJSON(u)}, nil
}

func (s *Server) userJSON(u *user) map[string]any {
	return map[string]any{
		"id":        u.id,
		"team_id":   s.opts.TeamID,
		"name":      u.name,
		"deleted":   false,
		"real_name": u.realName,
		"tz":        u.tz,
		"tz_label":  "Coordinated Universal Time",
		"tz_offset": 0,
		"is_bot":    u.isBot,
		"profile": map[string]any{
			"real_name":               u.realName,
			"real_name_normalized":    u.realName,
			"display_name":            u.name,
			"display_name_normalized": u.name,
		},
	}
}

func splitList(list string) []string {
	var items []string
	for item := range strings.SplitSeq(list, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}
