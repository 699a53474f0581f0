// Package domain holds gpubot's own vocabulary, free of Slack, fal and any
// database: a request for a GPU machine and the one table of its states, the
// users who ask, their SSH public keys and the checks a pasted key must pass,
// the audit trail's events, and Store, the contract every store keeps. The
// flows in handlers speak these types; storage (bbolt) and storage/etcdstore
// keep them.
package domain
