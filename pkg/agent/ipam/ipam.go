// Package ipam is the node's pod address allocator inside the node's host
// subnet, with crash-safe state on disk.
//
// # State
//
// One file per allocated address, named after the address (like the
// host-local plugin), holding the container ID, interface name and owner as
// JSON. A file is created complete or not at all, and never twice:
//
//  1. the record is written to a temporary file (".tmp-*") and fsynced;
//  2. the temporary file is hard-linked to the address's name — link(2)
//     fails if the name exists, so two allocators (two agents, or an agent
//     and its crashed predecessor's leftovers) can never both take an
//     address;
//  3. the temporary file is removed and the directory fsynced.
//
// A crash before 2 leaves only a temporary file, which Open ignores (and
// removes once it is old); a crash after 2 leaves a complete record. The
// state therefore survives agent crashes and node reboots, and an ADD that
// is retried after a crash between allocation and the reply to the runtime
// gets the same address back (Allocate is idempotent per container ID and
// interface).
//
// The next address is searched round robin from the last allocation (kept in
// a hint file; losing it only moves the starting point), so a just-freed
// address is reused only after the others.
//
// Records whose address is outside the subnet's pod range — the node got a
// different HostSubnet — are kept and reported as stale: they are never
// handed out, and go away with Release or GC like any other.
//
// One agent owns a directory; the link step keeps addresses unique even if
// two run, but idempotency across two live allocators is not guaranteed.
// IPv4 and IPv6 allocators may share a directory: each ignores the other
// family's records.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrExhausted is returned (wrapped, naming the subnet) when every pod
// address of the subnet is allocated.
var ErrExhausted = errors.New("no free address")

// Key identifies an attachment: a container's interface.
type Key struct {
	ContainerID, IfName string
}

// Allocation is one allocated address.
type Allocation struct {
	Key
	Addr  netip.Addr
	Owner string // free text, usually namespace/pod
	// Stale is set for records outside the current subnet's pod range
	// (left from an earlier HostSubnet); they are never handed out.
	Stale bool
}

const (
	tmpPrefix = ".tmp-"
	// tmpMaxAge: Open removes temporary files older than this; younger ones
	// may belong to another allocator in the middle of a write.
	tmpMaxAge = time.Minute
)

// record is the content of an address file.
type record struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	Owner       string `json:"owner,omitempty"`
}

// Allocator hands out the pod addresses of one subnet. It is safe for
// concurrent use.
type Allocator struct {
	dir string
	r   addrRange

	mu     sync.Mutex
	byAddr map[netip.Addr]Allocation
	byKey  map[Key][]netip.Addr
	inUse  uint64     // allocations inside the pod range
	last   netip.Addr // the last address handed out (round-robin cursor)
}

// Open loads the allocations recorded in dir (created 0700 if missing) for
// subnet. The subnet must leave at least one pod address after the network,
// gateway and (IPv4) broadcast addresses.
func Open(dir string, subnet netip.Prefix) (*Allocator, error) {
	r, err := newRange(subnet)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("IPAM state directory: %w", err)
	}
	a := &Allocator{
		dir:    dir,
		r:      r,
		byAddr: map[netip.Addr]Allocation{},
		byKey:  map[Key][]netip.Addr{},
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("IPAM state directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			// A write interrupted by a crash; never a record.
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > tmpMaxAge {
				os.Remove(filepath.Join(dir, name))
			}
			continue
		}
		addr, err := netip.ParseAddr(name)
		if err != nil || addr.BitLen() != r.first.BitLen() || addr.Zone() != "" {
			continue // the hint file, the other family, anything else
		}
		rec, err := readRecord(filepath.Join(dir, name))
		if err != nil {
			// Not written by us (our files are complete by construction):
			// keep the address reserved, under a key no one will claim, so
			// that GC releases it.
			rec = record{Owner: "unreadable record: " + err.Error()}
		}
		a.add(Allocation{Key: Key{rec.ContainerID, rec.IfName}, Addr: addr, Owner: rec.Owner})
	}
	if b, err := os.ReadFile(a.hintPath()); err == nil {
		if h, err := netip.ParseAddr(strings.TrimSpace(string(b))); err == nil && r.contains(h) {
			a.last = h
		}
	}
	return a, nil
}

// add indexes an allocation, marking it stale when it is outside the range.
func (a *Allocator) add(al Allocation) {
	al.Stale = !a.r.contains(al.Addr)
	a.byAddr[al.Addr] = al
	a.byKey[al.Key] = append(a.byKey[al.Key], al.Addr)
	if !al.Stale {
		a.inUse++
	}
}

// forget drops an allocation from the index.
func (a *Allocator) forget(addr netip.Addr) {
	al, ok := a.byAddr[addr]
	if !ok {
		return
	}
	delete(a.byAddr, addr)
	rest := slices.DeleteFunc(a.byKey[al.Key], func(x netip.Addr) bool { return x == addr })
	if len(rest) == 0 {
		delete(a.byKey, al.Key)
	} else {
		a.byKey[al.Key] = rest
	}
	if !al.Stale {
		a.inUse--
	}
}

// Subnet is the subnet the allocator hands out.
func (a *Allocator) Subnet() netip.Prefix { return a.r.subnet }

// Gateway is the subnet's first usable address, reserved for the node (it
// sits on every pod's host-side veth); never handed out.
func (a *Allocator) Gateway() netip.Addr { return a.r.gateway }

// Allocate returns the address of containerID's interface ifName, allocating
// one if it has none in the subnet. Calling it again for the same container
// and interface returns the same address, also after a crash and restart.
// When the subnet is full the error wraps ErrExhausted.
func (a *Allocator) Allocate(containerID, ifName, owner string) (netip.Addr, error) {
	if containerID == "" || ifName == "" {
		return netip.Addr{}, fmt.Errorf("IPAM: allocation needs a container ID and an interface name (got %q, %q)", containerID, ifName)
	}
	k := Key{containerID, ifName}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, addr := range a.byKey[k] {
		if !a.byAddr[addr].Stale {
			return addr, nil
		}
	}

	data, err := json.Marshal(record{ContainerID: containerID, IfName: ifName, Owner: owner})
	if err != nil {
		return netip.Addr{}, err
	}
	tmp, err := a.writeTemp(data)
	if err != nil {
		return netip.Addr{}, err
	}
	defer os.Remove(tmp)

	cursor := a.last
	for {
		addr, ok := a.r.nextFree(cursor, a.inUse, func(x netip.Addr) bool { _, used := a.byAddr[x]; return used })
		if !ok {
			return netip.Addr{}, fmt.Errorf("%w in %s: all %d pod addresses are allocated", ErrExhausted, a.r.subnet, a.inUse)
		}
		err := os.Link(tmp, a.path(addr))
		if errors.Is(err, os.ErrExist) {
			// Taken behind our back (another allocator on this directory):
			// learn it and go on.
			rec, rerr := readRecord(a.path(addr))
			if rerr != nil {
				rec = record{Owner: "unreadable record: " + rerr.Error()}
			}
			a.add(Allocation{Key: Key{rec.ContainerID, rec.IfName}, Addr: addr, Owner: rec.Owner})
			if rec.ContainerID == containerID && rec.IfName == ifName {
				return addr, nil
			}
			cursor = addr
			continue
		}
		if err != nil {
			return netip.Addr{}, fmt.Errorf("IPAM: record %s: %w", addr, err)
		}
		if err := syncDir(a.dir); err != nil {
			os.Remove(a.path(addr))
			return netip.Addr{}, fmt.Errorf("IPAM: record %s: %w", addr, err)
		}
		a.add(Allocation{Key: k, Addr: addr, Owner: owner})
		a.last = addr
		a.writeHint(addr)
		return addr, nil
	}
}

// Release frees every address of containerID's interface ifName (stale ones
// included). Releasing what is not allocated succeeds.
func (a *Allocator) Release(containerID, ifName string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, addr := range slices.Clone(a.byKey[Key{containerID, ifName}]) {
		errs = append(errs, a.release(addr))
	}
	return errors.Join(errs...)
}

// release removes one address's record; a.mu is held.
func (a *Allocator) release(addr netip.Addr) error {
	al := a.byAddr[addr]
	// Only remove the file if it is still this allocation's: another
	// allocator may have released and reused the address meanwhile.
	if rec, err := readRecord(a.path(addr)); err == nil && (rec.ContainerID != al.ContainerID || rec.IfName != al.IfName) {
		a.forget(addr)
		return nil
	}
	if err := os.Remove(a.path(addr)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("IPAM: release %s: %w", addr, err)
	}
	a.forget(addr)
	if err := syncDir(a.dir); err != nil {
		return fmt.Errorf("IPAM: release %s: %w", addr, err)
	}
	return nil
}

// GC releases every allocation whose key is not in valid (stale and
// unreadable records included) and returns what it released. It goes on
// past errors and returns them joined.
func (a *Allocator) GC(valid map[Key]bool) ([]Allocation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var released []Allocation
	var errs []error
	for _, al := range a.sorted() {
		if valid[al.Key] {
			continue
		}
		if err := a.release(al.Addr); err != nil {
			errs = append(errs, err)
			continue
		}
		released = append(released, al)
	}
	return released, errors.Join(errs...)
}

// List returns every allocation, stale ones included, by address.
func (a *Allocator) List() []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sorted()
}

// Stale returns the allocations outside the subnet's pod range: records
// from an earlier subnet, which are never handed out.
func (a *Allocator) Stale() []Allocation {
	return slices.DeleteFunc(a.List(), func(al Allocation) bool { return !al.Stale })
}

func (a *Allocator) sorted() []Allocation {
	out := make([]Allocation, 0, len(a.byAddr))
	for _, al := range a.byAddr {
		out = append(out, al)
	}
	slices.SortFunc(out, func(x, y Allocation) int { return x.Addr.Compare(y.Addr) })
	return out
}

func (a *Allocator) path(addr netip.Addr) string { return filepath.Join(a.dir, addr.String()) }

func (a *Allocator) hintPath() string {
	if a.r.first.Is4() {
		return filepath.Join(a.dir, "last-allocated-v4")
	}
	return filepath.Join(a.dir, "last-allocated-v6")
}

// writeTemp writes data to a fresh temporary file in the directory and
// fsyncs it.
func (a *Allocator) writeTemp(data []byte) (string, error) {
	f, err := os.CreateTemp(a.dir, tmpPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("IPAM: %w", err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("IPAM: write record: %w", werr)
	}
	return f.Name(), nil
}

// writeHint records the round-robin cursor. Best effort: losing it only
// changes where the next search starts, so no fsync.
func (a *Allocator) writeHint(addr netip.Addr) {
	f, err := os.CreateTemp(a.dir, tmpPrefix+"*")
	if err != nil {
		return
	}
	_, err = f.WriteString(addr.String() + "\n")
	f.Close()
	if err == nil {
		err = os.Rename(f.Name(), a.hintPath())
	}
	if err != nil {
		os.Remove(f.Name())
	}
}

func readRecord(path string) (record, error) {
	var rec record
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, err
	}
	if rec.ContainerID == "" || rec.IfName == "" {
		return rec, errors.New("no container ID or interface name")
	}
	return rec, nil
}

// syncDir makes a directory's entries (a new link, a removal) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
