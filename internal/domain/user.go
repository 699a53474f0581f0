package domain

import (
	"errors"
	"time"
)

// UserRef names a Slack user across workspaces.
type UserRef struct{ TeamID, UserID string }

func (u UserRef) String() string { return u.TeamID + "/" + u.UserID }

// Validate refuses a reference that names no user.
func (u UserRef) Validate() error {
	if u.UserID == "" {
		return errors.New("user has no user id")
	}
	return nil
}

// StoredKey is a user's registered SSH public key.
type StoredKey struct {
	PublicKey
	SetAt time.Time `json:"set_at"`
}
