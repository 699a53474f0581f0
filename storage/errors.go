package storage

import "errors"

// ErrInUse is returned by Open when another process holds the file.
var ErrInUse = errors.New("in use by another gpubot")

// sentinelError carries a full user-facing message while still matching a
// sentinel with errors.Is.
type sentinelError struct {
	message  string
	sentinel error
}

func (e *sentinelError) Error() string { return e.message }
func (e *sentinelError) Unwrap() error { return e.sentinel }
