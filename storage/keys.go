package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// UserRef names a Slack user across workspaces.
type UserRef struct{ TeamID, UserID string }

func (u UserRef) String() string { return u.TeamID + "/" + u.UserID }

func (u UserRef) valid() error {
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

// SetKey registers k as u's key, replacing any earlier one, and audits
// "key_set". k must be a key ParsePublicKey accepted. ForEnvelope makes a
// redelivered command set nothing.
func (s *Store) SetKey(ctx context.Context, u UserRef, k PublicKey, opts ...WriteOption) error {
	if err := u.valid(); err != nil {
		return fmt.Errorf("set key: %w", err)
	}
	checked, err := ParsePublicKey(k.AuthorizedKey)
	if err != nil || checked.Fingerprint != k.Fingerprint {
		return fmt.Errorf("set key for %s: not a key ParsePublicKey accepted", u)
	}
	now := s.now()
	err = s.update(ctx, func(tx *bolt.Tx) error {
		if err := s.claimEnvelope(tx, opts, now); err != nil {
			return err
		}
		if err := putJSON(bucket(tx, bucketKeys), userPrefix(u), StoredKey{PublicKey: checked, SetAt: now}); err != nil {
			return err
		}
		return appendAudit(tx, AuditEvent{At: now, Actor: u.UserID, Action: "key_set", Detail: checked.Fingerprint})
	})
	if err != nil {
		return fmt.Errorf("set key for %s: %w", u, err)
	}
	return nil
}

// Key returns u's registered key, or ErrNotFound.
func (s *Store) Key(ctx context.Context, u UserRef) (StoredKey, error) {
	var key StoredKey
	err := s.view(ctx, func(tx *bolt.Tx) error {
		raw := bucket(tx, bucketKeys).Get(userPrefix(u))
		if raw == nil {
			return ErrNotFound
		}
		return json.Unmarshal(raw, &key)
	})
	if err != nil {
		return StoredKey{}, fmt.Errorf("key of %s: %w", u, err)
	}
	return key, nil
}

// RemoveKey forgets u's key (ErrNotFound if there is none) and audits
// "key_removed". ForEnvelope makes a redelivered command remove nothing.
func (s *Store) RemoveKey(ctx context.Context, u UserRef, opts ...WriteOption) error {
	now := s.now()
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if err := s.claimEnvelope(tx, opts, now); err != nil {
			return err
		}
		keys := bucket(tx, bucketKeys)
		raw := keys.Get(userPrefix(u))
		if raw == nil {
			return ErrNotFound
		}
		var old StoredKey
		if err := json.Unmarshal(raw, &old); err != nil {
			return fmt.Errorf("decode key: %w", err)
		}
		if err := keys.Delete(userPrefix(u)); err != nil {
			return err
		}
		return appendAudit(tx, AuditEvent{At: now, Actor: u.UserID, Action: "key_removed", Detail: old.Fingerprint})
	})
	if err != nil {
		return fmt.Errorf("remove key of %s: %w", u, err)
	}
	return nil
}
