package ipam

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestRange(t *testing.T) {
	cases := []struct {
		subnet          string
		gw, first, last string
		size            uint64
		err             bool
	}{
		{subnet: "10.128.1.0/24", gw: "10.128.1.1", first: "10.128.1.2", last: "10.128.1.254", size: 253},
		{subnet: "10.128.1.77/24", gw: "10.128.1.1", first: "10.128.1.2", last: "10.128.1.254", size: 253},
		{subnet: "10.128.0.0/23", gw: "10.128.0.1", first: "10.128.0.2", last: "10.128.1.254", size: 509},
		{subnet: "10.0.0.0/30", gw: "10.0.0.1", first: "10.0.0.2", last: "10.0.0.2", size: 1},
		{subnet: "10.0.0.0/31", err: true},
		{subnet: "10.0.0.0/32", err: true},
		{subnet: "fd00:1::/64", gw: "fd00:1::1", first: "fd00:1::2", last: "fd00:1::ffff:ffff:ffff:ffff", size: math.MaxUint64},
		{subnet: "fd00:1::/120", gw: "fd00:1::1", first: "fd00:1::2", last: "fd00:1::ff", size: 254},
		{subnet: "fd00::/126", gw: "fd00::1", first: "fd00::2", last: "fd00::3", size: 2},
		{subnet: "fd00::/127", err: true},
	}
	for _, tc := range cases {
		r, err := newRange(pfx(tc.subnet))
		if tc.err {
			if err == nil || !strings.Contains(err.Error(), "too small") {
				t.Errorf("%s: err %v, want too small", tc.subnet, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.subnet, err)
		}
		if r.gateway != addr(tc.gw) || r.first != addr(tc.first) || r.last != addr(tc.last) || r.size != tc.size {
			t.Errorf("%s: gw %v first %v last %v size %d", tc.subnet, r.gateway, r.first, r.last, r.size)
		}
	}
	if _, err := newRange(netip.Prefix{}); err == nil {
		t.Error("zero prefix accepted")
	}
}

func TestRangeSearch(t *testing.T) {
	r, _ := newRange(pfx("10.0.0.0/29")) // pods .2–.6
	for _, a := range []string{"10.0.0.0", "10.0.0.1", "10.0.0.7", "10.0.0.8", "fd00::2"} {
		if r.contains(addr(a)) {
			t.Errorf("%s is not a pod address", a)
		}
	}
	used := map[netip.Addr]bool{addr("10.0.0.3"): true, addr("10.0.0.4"): true}
	isUsed := func(a netip.Addr) bool { return used[a] }
	steps := []struct{ after, want string }{
		{"", "10.0.0.2"},         // no cursor: from the start
		{"10.0.0.2", "10.0.0.5"}, // skips used .3, .4
		{"10.0.0.6", "10.0.0.2"}, // wraps
		{"10.0.0.1", "10.0.0.2"}, // cursor outside the range
	}
	for _, s := range steps {
		var after netip.Addr
		if s.after != "" {
			after = addr(s.after)
		}
		got, ok := r.nextFree(after, uint64(len(used)), isUsed)
		if !ok || got != addr(s.want) {
			t.Errorf("after %q: %v %v, want %s", s.after, got, ok, s.want)
		}
	}
	for _, a := range []string{"10.0.0.2", "10.0.0.5", "10.0.0.6"} {
		used[addr(a)] = true
	}
	if a, ok := r.nextFree(addr("10.0.0.2"), 5, isUsed); ok {
		t.Errorf("full range gave %v", a)
	}
}

func open(t *testing.T, dir, subnet string) *Allocator {
	t.Helper()
	a, err := Open(dir, pfx(subnet))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func alloc(t *testing.T, a *Allocator, id, ifName string) netip.Addr {
	t.Helper()
	ip, err := a.Allocate(id, ifName, "ns/"+id)
	if err != nil {
		t.Fatalf("Allocate(%s, %s): %v", id, ifName, err)
	}
	return ip
}

// files lists the address records on disk.
func files(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestAllocateIdempotent(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.128.1.0/24")
	if a.Gateway() != addr("10.128.1.1") || a.Subnet() != pfx("10.128.1.0/24") {
		t.Fatalf("gateway %v subnet %v", a.Gateway(), a.Subnet())
	}
	ip1 := alloc(t, a, "c1", "eth0")
	if ip1 != addr("10.128.1.2") {
		t.Errorf("first address %v, want 10.128.1.2 (after network and gateway)", ip1)
	}
	if again, err := a.Allocate("c1", "eth0", "someone else"); err != nil || again != ip1 {
		t.Errorf("second Allocate: %v %v, want %v", again, err, ip1)
	}
	ip2 := alloc(t, a, "c1", "net1")
	if ip2 == ip1 {
		t.Error("another interface of the same container got the same address")
	}
	if got := a.List(); len(got) != 2 || got[0].Owner != "ns/c1" || got[0].Key != (Key{"c1", "eth0"}) {
		t.Errorf("List %+v", got)
	}
	if len(files(t, dir)) != 2 {
		t.Errorf("files %v", files(t, dir))
	}
	if _, err := a.Allocate("", "eth0", ""); err == nil {
		t.Error("empty container ID accepted")
	}
	if _, err := a.Allocate("c", "", ""); err == nil {
		t.Error("empty ifName accepted")
	}
}

func TestRoundRobin(t *testing.T) {
	a := open(t, t.TempDir(), "10.0.0.0/29") // .2–.6
	x := alloc(t, a, "a", "eth0")            // .2
	y := alloc(t, a, "b", "eth0")            // .3
	if err := a.Release("a", "eth0"); err != nil {
		t.Fatal(err)
	}
	if z := alloc(t, a, "c", "eth0"); z == x || z != y.Next() {
		t.Errorf("after releasing %v got %v, want %v (the just-freed address last)", x, z, y.Next())
	}
}

func TestExhaustion(t *testing.T) {
	a := open(t, t.TempDir(), "10.0.0.0/29")
	seen := map[netip.Addr]bool{}
	for i := 0; i < 5; i++ {
		ip := alloc(t, a, fmt.Sprint("c", i), "eth0")
		seen[ip] = true
	}
	for _, reserved := range []string{"10.0.0.0", "10.0.0.1", "10.0.0.7"} {
		if seen[addr(reserved)] {
			t.Errorf("handed out reserved %s", reserved)
		}
	}
	_, err := a.Allocate("c5", "eth0", "")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.0.0.0/29") {
		t.Fatalf("sixth Allocate: %v, want ErrExhausted naming the subnet", err)
	}
	// An existing attachment still gets its address back when full.
	if ip, err := a.Allocate("c0", "eth0", ""); err != nil || !seen[ip] {
		t.Errorf("idempotent Allocate when full: %v %v", ip, err)
	}
	if err := a.Release("c3", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate("c5", "eth0", ""); err != nil {
		t.Errorf("after a release: %v", err)
	}
}

func TestReleaseIdempotent(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.0.0.0/24")
	alloc(t, a, "c1", "eth0")
	for i := 0; i < 2; i++ {
		if err := a.Release("c1", "eth0"); err != nil {
			t.Fatalf("Release #%d: %v", i, err)
		}
	}
	if err := a.Release("never", "eth0"); err != nil {
		t.Fatal(err)
	}
	if len(a.List()) != 0 || len(files(t, dir)) != 0 {
		t.Errorf("left: %v %v", a.List(), files(t, dir))
	}
}

func TestGC(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.0.0.0/24")
	for i := 0; i < 5; i++ {
		alloc(t, a, fmt.Sprint("c", i), "eth0")
	}
	keep := map[Key]bool{{"c1", "eth0"}: true, {"c3", "eth0"}: true, {"c3", "net1"}: true}
	released, err := a.GC(keep)
	if err != nil {
		t.Fatal(err)
	}
	if len(released) != 3 {
		t.Errorf("released %v", released)
	}
	left := a.List()
	if len(left) != 2 || left[0].ContainerID != "c1" || left[1].ContainerID != "c3" {
		t.Errorf("left %v", left)
	}
	if len(files(t, dir)) != 2 {
		t.Errorf("files %v", files(t, dir))
	}
	if released, _ := a.GC(nil); len(released) != 2 || len(a.List()) != 0 {
		t.Errorf("GC(nil) released %v, left %v", released, a.List())
	}
}

// A crash is an Allocator dropped without any shutdown; the next one opens
// the same directory.
func TestCrashAndReopen(t *testing.T) {
	dir := t.TempDir()
	a1 := open(t, dir, "10.0.0.0/24")
	var ips []netip.Addr
	for i := 0; i < 3; i++ {
		ips = append(ips, alloc(t, a1, fmt.Sprint("c", i), "eth0"))
	}
	a1.Release("c0", "eth0")

	a2 := open(t, dir, "10.0.0.0/24")
	if fmt.Sprint(a2.List()) != fmt.Sprint(a1.List()) {
		t.Fatalf("after reopen %v, before %v", a2.List(), a1.List())
	}
	// The runtime retries an ADD whose reply was lost in the crash.
	if ip := alloc(t, a2, "c2", "eth0"); ip != ips[2] {
		t.Errorf("retried ADD got %v, want %v", ip, ips[2])
	}
	// Round robin continues after the last allocation, not from the start
	// (which would reuse c0's just-freed address).
	if ip := alloc(t, a2, "c9", "eth0"); ip != ips[2].Next() {
		t.Errorf("new allocation after reopen %v, want %v", ip, ips[2].Next())
	}
}

func TestLeftoverFiles(t *testing.T) {
	dir := t.TempDir()
	a1 := open(t, dir, "10.0.0.0/29")
	alloc(t, a1, "c0", "eth0") // .2

	// A crash in the middle of a write leaves a temporary file, complete or
	// not; neither is a record.
	full := filepath.Join(dir, tmpPrefix+"old")
	os.WriteFile(full, []byte(`{"containerID":"c1","ifName":"eth0"}`), 0o600)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(full, old, old)
	half := filepath.Join(dir, tmpPrefix+"young")
	os.WriteFile(half, []byte(`{"containerID":"c`), 0o600)
	// Someone else's unreadable record (not ours: ours are never torn).
	os.WriteFile(filepath.Join(dir, "10.0.0.3"), []byte(`{"contai`), 0o600)
	// Files that are not records at all.
	os.WriteFile(filepath.Join(dir, "README"), []byte("hi"), 0o600)
	os.WriteFile(filepath.Join(dir, "last-allocated-v4"), []byte("garbage"), 0o600)

	a2 := open(t, dir, "10.0.0.0/29")
	if _, err := os.Stat(full); !errors.Is(err, os.ErrNotExist) {
		t.Error("old temporary file not cleaned up")
	}
	if _, err := os.Stat(half); err != nil {
		t.Error("young temporary file removed (it may be another allocator's write in progress)")
	}
	got := a2.List()
	if len(got) != 2 || got[1].Addr != addr("10.0.0.3") || got[1].ContainerID != "" || !strings.Contains(got[1].Owner, "unreadable") {
		t.Fatalf("List %+v", got)
	}
	// The unreadable address is not handed out...
	ip := alloc(t, a2, "c1", "eth0")
	if ip == addr("10.0.0.3") || ip == addr("10.0.0.2") {
		t.Errorf("handed out %v", ip)
	}
	// ...until GC clears it.
	released, err := a2.GC(map[Key]bool{{"c0", "eth0"}: true, {"c1", "eth0"}: true})
	if err != nil || len(released) != 1 || released[0].Addr != addr("10.0.0.3") {
		t.Errorf("GC released %v %v", released, err)
	}
}

func TestConcurrentAllocate(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.0.0.0/24")
	const n = 100
	ips := make([]netip.Addr, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip, err := a.Allocate(fmt.Sprint("ctr", i), "eth0", "")
			if err != nil {
				t.Error(err)
			}
			ips[i] = ip
			// The same attachment asked again concurrently gets the same.
			if again, err := a.Allocate(fmt.Sprint("ctr", i), "eth0", ""); err != nil || again != ip {
				t.Errorf("ctr%d: %v then %v (%v)", i, ip, again, err)
			}
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, ip := range ips {
		if j, dup := seen[ip]; dup {
			t.Errorf("ctr%d and ctr%d both got %v", i, j, ip)
		}
		seen[ip] = i
	}
	if len(files(t, dir)) != n {
		t.Errorf("%d records on disk, want %d", len(files(t, dir)), n)
	}
}

// Two allocators on one directory (two agents, or a stuck old one) never
// hand out one address twice: the link(2) step is exclusive.
func TestTwoAllocatorsOneDirectory(t *testing.T) {
	dir := t.TempDir()
	a1 := open(t, dir, "10.0.0.0/24")
	a2 := open(t, dir, "10.0.0.0/24")
	const n = 60
	var mu sync.Mutex
	owner := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		for j, a := range []*Allocator{a1, a2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("a%d-c%d", j, i)
				ip, err := a.Allocate(id, "eth0", "")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if o, dup := owner[ip]; dup {
					t.Errorf("%v given to %s and %s", ip, o, id)
				}
				owner[ip] = id
			}()
		}
	}
	wg.Wait()
	a3 := open(t, dir, "10.0.0.0/24")
	if got := len(a3.List()); got != 2*n {
		t.Errorf("%d records, want %d", got, 2*n)
	}
	for _, al := range a3.List() {
		if owner[al.Addr] != al.ContainerID {
			t.Errorf("record %v says %s, allocator said %s", al.Addr, al.ContainerID, owner[al.Addr])
		}
	}
}

func TestExhaustionAcrossAllocators(t *testing.T) {
	dir := t.TempDir()
	a1 := open(t, dir, "10.0.0.0/29")
	a2 := open(t, dir, "10.0.0.0/29")
	for i := 0; i < 3; i++ {
		alloc(t, a1, fmt.Sprint("x", i), "eth0")
	}
	// a2 believes all five are free; it discovers a1's three on the way.
	alloc(t, a2, "y0", "eth0")
	alloc(t, a2, "y1", "eth0")
	if _, err := a2.Allocate("y2", "eth0", ""); !errors.Is(err, ErrExhausted) {
		t.Errorf("want ErrExhausted, got %v", err)
	}
}

// The node got a different HostSubnet: old records are stale, never handed
// out, and leave with Release or GC.
func TestSubnetChange(t *testing.T) {
	dir := t.TempDir()
	old := open(t, dir, "10.1.0.0/24")
	for i := 0; i < 3; i++ {
		alloc(t, old, fmt.Sprint("c", i), "eth0")
	}

	a := open(t, dir, "10.2.0.0/29")
	stale := a.Stale()
	if len(stale) != 3 {
		t.Fatalf("stale %v, want the 3 old records", stale)
	}
	for _, s := range stale {
		if !s.Stale || !pfx("10.1.0.0/24").Contains(s.Addr) {
			t.Errorf("stale entry %+v", s)
		}
	}
	// A retried ADD for a container with an old address gets a new one.
	ip := alloc(t, a, "c0", "eth0")
	if !pfx("10.2.0.0/29").Contains(ip) {
		t.Fatalf("handed out %v outside the subnet", ip)
	}
	if again := alloc(t, a, "c0", "eth0"); again != ip {
		t.Errorf("idempotency with a stale record: %v then %v", ip, again)
	}
	// The whole new range is usable: stale records do not count.
	for i := 0; i < 4; i++ {
		if ip := alloc(t, a, fmt.Sprint("n", i), "eth0"); !pfx("10.2.0.0/29").Contains(ip) {
			t.Fatalf("handed out %v", ip)
		}
	}
	if _, err := a.Allocate("n9", "eth0", ""); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.2.0.0/29") {
		t.Errorf("want ErrExhausted naming 10.2.0.0/29: %v", err)
	}
	// Release takes the stale and the new address.
	if err := a.Release("c0", "eth0"); err != nil {
		t.Fatal(err)
	}
	if len(a.Stale()) != 2 {
		t.Errorf("stale after Release: %v", a.Stale())
	}
	released, err := a.GC(map[Key]bool{{"n0", "eth0"}: true, {"n1", "eth0"}: true, {"n2", "eth0"}: true, {"n3", "eth0"}: true})
	if err != nil || len(released) != 2 || len(a.Stale()) != 0 {
		t.Errorf("GC released %v (%v), stale left %v", released, err, a.Stale())
	}
	if len(files(t, dir)) != 4 {
		t.Errorf("files %v", files(t, dir))
	}
}

// Records of the subnet's own reserved addresses (an older layout, a hand
// edit) are stale too: the gateway is never a pod's.
func TestReservedAddressRecordIsStale(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "10.0.0.1"), []byte(`{"containerID":"c","ifName":"eth0"}`), 0o600)
	a := open(t, dir, "10.0.0.0/24")
	if s := a.Stale(); len(s) != 1 || s[0].Addr != addr("10.0.0.1") {
		t.Errorf("stale %v", s)
	}
	if ip := alloc(t, a, "c", "eth0"); ip == a.Gateway() {
		t.Error("handed out the gateway")
	}
}

func TestIPv6AndSharedDirectory(t *testing.T) {
	dir := t.TempDir()
	v4 := open(t, dir, "10.0.0.0/24")
	v6 := open(t, dir, "fd00:10::/64")
	if v6.Gateway() != addr("fd00:10::1") {
		t.Errorf("v6 gateway %v", v6.Gateway())
	}
	ip4 := alloc(t, v4, "c1", "eth0")
	ip6 := alloc(t, v6, "c1", "eth0")
	if !ip4.Is4() || ip6 != addr("fd00:10::2") {
		t.Errorf("dual stack got %v and %v", ip4, ip6)
	}
	for i := 0; i < 50; i++ {
		alloc(t, v6, fmt.Sprint("c", i+2), "eth0")
	}
	// Each family ignores the other's records: nothing is stale.
	v4b := open(t, dir, "10.0.0.0/24")
	v6b := open(t, dir, "fd00:10::/64")
	if len(v4b.List()) != 1 || len(v6b.List()) != 51 || len(v4b.Stale())+len(v6b.Stale()) != 0 {
		t.Errorf("v4 %d (stale %d), v6 %d (stale %d)", len(v4b.List()), len(v4b.Stale()), len(v6b.List()), len(v6b.Stale()))
	}
	if ip := alloc(t, v6b, "c1", "eth0"); ip != ip6 {
		t.Errorf("v6 after reopen %v, want %v", ip, ip6)
	}
	if ip := alloc(t, v6b, "new", "eth0"); ip != addr("fd00:10::35") {
		t.Errorf("v6 round robin after reopen: %v, want fd00:10::35", ip)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(t.TempDir(), pfx("10.0.0.0/31")); err == nil || !strings.Contains(err.Error(), "10.0.0.0/31") {
		t.Errorf("tiny subnet: %v", err)
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := Open(f, pfx("10.0.0.0/24")); err == nil {
		t.Error("state directory that is a file accepted")
	}
	dir := filepath.Join(t.TempDir(), "a", "ipam")
	open(t, dir, "10.0.0.0/24")
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory %v %v", fi.Mode(), err)
	}
}
