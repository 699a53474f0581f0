// Package slacksim is an in-process Slack for gpubot: a Web API and a Socket Mode
// websocket on 127.0.0.1 that speak the wire protocols github.com/slack-go/slack
// v0.35.0 uses, plus a test-facing API to act as users (type slash commands, click
// buttons, submit modals) and to look at what the bot made Slack show.
//
// The bot under test connects with the real clients:
//
//	api := slack.New(botToken, slack.OptionAPIURL(sim.APIURL()), slack.OptionAppLevelToken(appToken))
//	client := socketmode.New(api)
//
// What it enforces, with Slack's own error names: tokens (not_authed, invalid_auth),
// channel membership (not_in_channel, channel_not_found), message and Block Kit
// limits (msg_too_long past 40,000 characters of text, invalid_blocks for a section
// or any text object over 3,000 characters, invalid_arguments for modals), what
// Slack's client refuses to submit (an input past its max_length), trigger_id
// expiry (3 s by Options.Now) and single use, response_url expiry (30 minutes by
// Options.Now) and its 5 uses, the 3 s ack deadline (by the wall clock, since it
// measures the bot), and the 20,480-byte limit on ack frames.
//
// Like Slack, it sends a slash command's text with &, < and > as entities.
//
// The app's Home tab: OpenHome sends app_home_opened (an Events API envelope, retried
// like any event); views.publish checks a Home view (100 blocks, no modal title or
// buttons) and keeps every view published (HomeView, HomePublishes); ClickHome presses
// a button on the tab (no channel or response_url, as Slack sends it). Shortcut sends
// a global shortcut with a trigger_id, not retried.
//
// What it leaves out: Slack's per-method rate limits are not applied on their own
// (a test asks for a 429 with RateLimitNext), except views.publish's per-workspace
// limit (Options.PublishesPerMinute, 100 by default); only one-person DMs exist;
// message attachments and files are stored as given but not validated.
//
// Everything it keeps is bounded: the call log, the message log and the envelope
// table keep the most recent entries (see the max* constants), and envelopes that
// wait for a connection are capped.
package slacksim
