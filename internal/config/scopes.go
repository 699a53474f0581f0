package config

// BotScopes are the bot token scopes manifest.yml asks for, and all that
// gpubot's Slack code may rely on; a test keeps the manifest equal to this
// list. Read it, never change it at run time.
var BotScopes = []string{
	"commands",        // the /gpu slash command
	"chat:write",      // posting and editing request threads, approval cards, notices and ephemeral replies
	"im:write",        // conversations.open: DMs when a channel is not postable, reminders to owners, decisions
	"usergroups:read", // usergroups.users.list: the members of user groups in APPROVERS and ADMINS
}
