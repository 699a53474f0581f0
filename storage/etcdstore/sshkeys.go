package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/gpubot/gpubot/internal/domain"
)

// SetKey registers k as u's key, replacing any earlier one, and audits
// "key_set". k must be a key ParsePublicKey accepted.
func (s *Store) SetKey(ctx context.Context, u domain.UserRef, k domain.PublicKey, opts ...domain.WriteOption) error {
	if err := u.Validate(); err != nil {
		return fmt.Errorf("set key: %w", err)
	}
	checked, err := domain.ParsePublicKey(k.AuthorizedKey)
	if err != nil || checked.Fingerprint != k.Fingerprint {
		return fmt.Errorf("set key for %s: not a key ParsePublicKey accepted", u)
	}
	now := s.now()
	err = s.write(ctx, true, func(t *txn) error {
		if err := t.prefetch(s.envelopeKey(opts)); err != nil {
			return err
		}
		if err := s.claimEnvelope(t, opts, now); err != nil {
			return err
		}
		data, err := encode(domain.StoredKey{PublicKey: checked, SetAt: now})
		if err != nil {
			return err
		}
		t.put(s.keys.sshKey(u), data)
		t.audit(domain.AuditEvent{At: now, Actor: u.UserID, Action: "key_set", Detail: checked.Fingerprint})
		return nil
	})
	if err != nil {
		return fmt.Errorf("set key for %s: %w", u, err)
	}
	return nil
}

// Key returns u's registered key, or ErrNotFound.
func (s *Store) Key(ctx context.Context, u domain.UserRef) (domain.StoredKey, error) {
	var key domain.StoredKey
	err := s.read(ctx, func(t *txn) error {
		raw, found, err := t.get(s.keys.sshKey(u))
		if err != nil {
			return err
		}
		if !found {
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
// "key_removed".
func (s *Store) RemoveKey(ctx context.Context, u domain.UserRef, opts ...domain.WriteOption) error {
	now := s.now()
	err := s.write(ctx, true, func(t *txn) error {
		if err := t.prefetch(s.keys.sshKey(u), s.envelopeKey(opts)); err != nil {
			return err
		}
		if err := s.claimEnvelope(t, opts, now); err != nil {
			return err
		}
		raw, found, err := t.get(s.keys.sshKey(u))
		if err != nil {
			return err
		}
		if !found {
			return domain.ErrNotFound
		}
		var old domain.StoredKey
		if err := json.Unmarshal(raw, &old); err != nil {
			return fmt.Errorf("decode key: %w", err)
		}
		t.del(s.keys.sshKey(u))
		t.audit(domain.AuditEvent{At: now, Actor: u.UserID, Action: "key_removed", Detail: old.Fingerprint})
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove key of %s: %w", u, err)
	}
	return nil
}
