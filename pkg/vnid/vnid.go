// Package vnid allocates VNIDs, the netIDs of NetNamespaces. It is a deterministic core
// without I/O, as pkg/subnet is for host subnets: the controller gives it the netIDs that
// NetNamespaces hold, and it answers with the lowest free one, whether a namespace keeps its
// netID when isolated, and which of two NetNamespaces that were both handed the same netID
// must move.
//
// VNID 0 is global (its pods reach and are reached by every pod) and is never handed out;
// every other VNID from 1 to the allocator's maximum (at most 2^24 − 1, what VXLAN carries) is
// free while no NetNamespace holds it.
package vnid

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
)

// Global is the VNID of global namespaces. It is reserved: Next never returns it, and any
// number of namespaces may hold it.
const Global uint32 = 0

// Max is the largest VNID: 24 bits.
const Max uint32 = sluicev1alpha1.MaxNetID

// ErrExhausted is what Next returns (wrapped in an *ExhaustedError) when every VNID is held.
var ErrExhausted = errors.New("no free netID")

// ExhaustedError says how many VNIDs there are.
type ExhaustedError struct{ Max uint32 }

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("%v: all netIDs 1 to %d are held", ErrExhausted, e.Max)
}

// Is makes errors.Is(err, ErrExhausted) true.
func (e *ExhaustedError) Is(target error) bool { return target == ErrExhausted }

// Allocator hands out the VNIDs from 1 to its maximum. It holds no allocation state: every
// call is given the VNIDs in use, so that the NetNamespaces in the API stay the only record
// and two calls with the same input give the same answer.
type Allocator struct {
	max uint32
}

// New returns an allocator of the VNIDs 1 to max. A max of 0 or above Max means Max; tests
// lower it to reach exhaustion.
func New(max uint32) *Allocator {
	if max == 0 || max > Max {
		max = Max
	}
	return &Allocator{max: max}
}

// Max is the largest VNID the allocator hands out.
func (a *Allocator) Max() uint32 { return a.max }

// Valid reports whether id is a VNID a NetNamespace may hold: Global, or one the allocator
// could have handed out.
func (a *Allocator) Valid(id uint32) bool { return id <= a.max }

// Next returns the lowest VNID from 1 that is not in used. used may be in any order and
// hold duplicates, Global and invalid VNIDs. When every VNID is used the error is an
// *ExhaustedError.
func (a *Allocator) Next(used []uint32) (uint32, error) {
	sorted := slices.Clone(used)
	slices.Sort(sorted)
	next := Global + 1
	// At most len(used) VNIDs are skipped: this is O(n log n) in the NetNamespaces, not in
	// the 2^24 VNIDs.
	for _, id := range sorted {
		if id > next || next > a.max {
			break
		}
		if id == next {
			next++
		}
	}
	if next > a.max {
		return 0, &ExhaustedError{Max: a.max}
	}
	return next, nil
}

// Isolate is the VNID of a namespace that asks to be alone on its VNID: the one it holds,
// current, if that is neither Global nor invalid nor shared with another namespace; else
// the lowest free one (used as for Next).
func (a *Allocator) Isolate(current uint32, shared bool, used []uint32) (uint32, error) {
	if current != Global && a.Valid(current) && !shared {
		return current, nil
	}
	return a.Next(used)
}

// Claim is a NetNamespace's hold on a VNID.
type Claim struct {
	Name string
	ID   uint32
	// Allocated is true when the controller handed ID out to this namespace as unique (the
	// annotation sluice.dev/allocated-netid equals it). Otherwise ID was set on purpose (a
	// join, an operator's edit), and sharing it is intended.
	Allocated bool
	// Created orders claims on the same VNID: the API server's creationTimestamp.
	Created time.Time
}

// Older orders claims by creation time, then by name: timestamps have a granularity of one
// second, and every controller must pick the same claim.
func Older(a, b Claim) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Name < b.Name
}

// Duplicates settles a VNID that was handed out as unique more than once (two controllers at
// once, or a cache behind the API): of the claims on one VNID that are Allocated, the oldest
// (Older) keeps it and the others must move. Claims that are not Allocated, and claims on
// Global, share on purpose and take no part. claims are meant to be those on one VNID; any
// on another VNID than the first claim's are ignored. ok is false when there is nothing to
// settle: fewer than two Allocated claims on a VNID other than Global.
func Duplicates(claims []Claim) (keeper Claim, movers []Claim, ok bool) {
	if len(claims) == 0 || claims[0].ID == Global {
		return Claim{}, nil, false
	}
	var dups []Claim
	for _, c := range claims {
		if c.Allocated && c.ID == claims[0].ID {
			dups = append(dups, c)
		}
	}
	if len(dups) < 2 {
		return Claim{}, nil, false
	}
	keeper = dups[0]
	for _, c := range dups[1:] {
		if Older(c, keeper) {
			keeper = c
		}
	}
	for _, c := range dups {
		if c != keeper {
			movers = append(movers, c)
		}
	}
	return keeper, movers, true
}

// Format writes a VNID as annotations and output carry it: in decimal.
func Format(id uint32) string { return strconv.FormatUint(uint64(id), 10) }

// Parse reads a VNID in decimal; anything else, or a VNID above Max, is an error.
func Parse(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > uint64(Max) {
		return 0, fmt.Errorf("%q is not a netID (0 to %d)", s, Max)
	}
	return uint32(n), nil
}
