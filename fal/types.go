package fal

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Instance types fal offers for compute instances.
const (
	Type1xH100 = "gpu_1x_h100_sxm5"
	Type8xH100 = "gpu_8x_h100_sxm5"
)

// Sectors choose InfiniBand placement inside a region; only 8x instances take one.
const (
	Sector1 = "sector_1"
	Sector2 = "sector_2"
	Sector3 = "sector_3"
)

// InstanceTypes lists every instance type fal accepts, in a stable order.
func InstanceTypes() []string { return []string{Type1xH100, Type8xH100} }

// Sectors lists every sector fal accepts, in a stable order.
func Sectors() []string { return []string{Sector1, Sector2, Sector3} }

// ValidInstanceType reports whether fal knows the instance type t.
func ValidInstanceType(t string) bool { return slices.Contains(InstanceTypes(), t) }

// ValidSector reports whether s is one of sector_1..sector_3.
func ValidSector(s string) bool { return slices.Contains(Sectors(), s) }

// Status is an instance's operational status as fal reports it.
type Status string

// Statuses fal documents. pending, init and provisioning come before ready.
const (
	StatusPending      Status = "pending"
	StatusInit         Status = "init"
	StatusProvisioning Status = "provisioning"
	StatusReady        Status = "ready"
	StatusStopped      Status = "stopped"
	StatusUnknown      Status = "unknown"
)

// Known reports whether s is one of the statuses fal documents.
func (s Status) Known() bool {
	switch s {
	case StatusPending, StatusInit, StatusProvisioning, StatusReady, StatusStopped, StatusUnknown:
		return true
	}
	return false
}

// Instance is a compute instance as fal describes it. Sector, IP and
// CreatorUserNickname are empty when fal leaves them out (IP until ready).
type Instance struct {
	ID                  string `json:"id"`
	InstanceType        string `json:"instance_type"`
	Region              string `json:"region"`
	Sector              string `json:"sector,omitempty"`
	IP                  string `json:"ip,omitempty"`
	Status              Status `json:"status"`
	CreatorUserNickname string `json:"creator_user_nickname,omitempty"`
}

// CreateRequest is the body of a create call.
type CreateRequest struct {
	InstanceType string `json:"instance_type"`
	SSHKey       string `json:"ssh_key"`
	Sector       string `json:"sector,omitempty"`
}

// ErrInvalidRequest marks a request the client refused to send because fal
// would reject it. IsValidation reports true for it.
var ErrInvalidRequest = errors.New("invalid request")

// Validate checks what fal would reject with a 400, so a request that cannot
// succeed is never sent. The messages say how to fix the request.
func (r CreateRequest) Validate() error {
	if !ValidInstanceType(r.InstanceType) {
		return invalidf("unknown instance type %q: use %s", r.InstanceType, strings.Join(InstanceTypes(), " or "))
	}
	if r.Sector != "" {
		if r.InstanceType != Type8xH100 {
			return invalidf("a sector can only be chosen for %s, not %s", Type8xH100, r.InstanceType)
		}
		if !ValidSector(r.Sector) {
			return invalidf("unknown sector %q: use one of %s", r.Sector, strings.Join(Sectors(), ", "))
		}
	}
	if strings.TrimSpace(r.SSHKey) == "" {
		return invalidf("an SSH public key is required")
	}
	return nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))
}
