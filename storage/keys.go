package storage

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// SetKey registers k as u's key, replacing any earlier one, and audits
// "key_set". k must be a key ParsePublicKey accepted. ForEnvelope makes a
// redelivered command set nothing.
func (s *Store) SetKey(ctx context.Context, u domain.UserRef, k domain.PublicKey, opts ...domain.WriteOption) error {
	if err := u.Validate(); err != nil {
		return fmt.Errorf("set key: %w", err)
	}
	checked, err := domain.ParsePublicKey(k.AuthorizedKey)
	if err != nil || checked.Fingerprint != k.Fingerprint {
		return fmt.Errorf("set key for %s: not a key ParsePublicKey accepted", u)
	}
	now := s.now()
	err = s.update(ctx, func(tx *bolt.Tx) error {
		if err := s.claimEnvelope(tx, opts, now); err != nil {
			return err
		}
		if err := putJSON(bucket(tx, bucketKeys), userPrefix(u), domain.StoredKey{PublicKey: checked, SetAt: now}); err != nil {
			return err
		}
		return appendAudit(tx, domain.AuditEvent{At: now, Actor: u.UserID, Action: "key_set", Detail: checked.Fingerprint})
	})
	if err != nil {
		return fmt.Errorf("set key for %s: %w", u, err)
	}
	return nil
}

// Key returns u's registered key, or ErrNotFound.
func (s *Store) Key(ctx context.Context, u domain.UserRef) (domain.StoredKey, error) {
	var key domain.StoredKey
	err := s.view(ctx, func(tx *bolt.Tx) error {
		raw := bucket(tx, bucketKeys).Get(userPrefix(u))
		if raw == nil {
			return domain.ErrNotFound
		}
		return json.Unmarshal(raw, &key)
	})
	if err != nil {
		return domain.StoredKey{}, fmt.Errorf("key of %s: %w", u, err)
	}
	return key, nil
}

// RemoveKey forgets u's key (ErrNotFound if there is none) and audits
// "key_removed". ForEnvelope makes a redelivered command remove nothing.
func (s *Store) RemoveKey(ctx context.Context, u domain.UserRef, opts ...domain.WriteOption) error {
	now := s.now()
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if err := s.claimEnvelope(tx, opts, now); err != nil {
			return err
		}
		keys := bucket(tx, bucketKeys)
		raw := keys.Get(userPrefix(u))
		if raw == nil {
			return domain.ErrNotFound
		}
		var old domain.StoredKey
		if err := json.Unmarshal(raw, &old); err != nil {
			return fmt.Errorf("decode key: %w", err)
		}
		if err := keys.Delete(userPrefix(u)); err != nil {
			return err
		}
		return appendAudit(tx, domain.AuditEvent{At: now, Actor: u.UserID, Action: "key_removed", Detail: old.Fingerprint})
	})
	if err != nil {
		return fmt.Errorf("remove key of %s: %w", u, err)
	}
	return nil
}
