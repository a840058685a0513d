package podnet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/go-logr/logr"

	"github.com/sluice-net/sluice/pkg/agent/cniserver"
	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/agent/link"
)

type fakeIPAM struct {
	next  int
	atts  map[string]Attachment
	fail  error
	calls []string
}

func (f *fakeIPAM) key(cid, ifn string) string { return cid + "/" + ifn }

func (f *fakeIPAM) Allocate(cid, ifn, owner string) (netip.Addr, error) {
	f.calls = append(f.calls, "allocate")
	if f.fail != nil {
		return netip.Addr{}, f.fail
	}
	if a, ok := f.atts[f.key(cid, ifn)]; ok {
		return a.IP, nil
	}
	f.next++
	ip := netip.AddrFrom4([4]byte{10, 128, 0, byte(1 + f.next)})
	f.atts[f.key(cid, ifn)] = Attachment{ContainerID: cid, IfName: ifn, IP: ip, Owner: owner}
	return ip, nil
}
func (f *fakeIPAM) Release(cid, ifn string) error {
	f.calls = append(f.calls, "release")
	delete(f.atts, f.key(cid, ifn))
	return nil
}
func (f *fakeIPAM) Attachments() ([]Attachment, error) {
	var l []Attachment
	for _, a := range f.atts {
		l = append(l, a)
	}
	return l, nil
}
func (f *fakeIPAM) GC(keep []Attachment) error {
	for k, a := range f.atts {
		if !slices.ContainsFunc(keep, func(x Attachment) bool { return x.ContainerID == a.ContainerID && x.IfName == a.IfName }) {
			delete(f.atts, k)
		}
	}
	return nil
}

type fakeLinks struct {
	ifs       map[string]link.Pod
	failSetup error
}

func (f *fakeLinks) SetupPod(p link.Pod) (string, error) {
	if f.failSetup != nil {
		return "", f.failSetup
	}
	f.ifs[link.HostIfName(p.ContainerID)] = p
	return "0a:58:0a:80:00:02", nil
}
func (f *fakeLinks) TeardownPod(cid string) error { delete(f.ifs, link.HostIfName(cid)); return nil }
func (f *fakeLinks) CheckPod(p link.Pod) error {
	if got, ok := f.ifs[link.HostIfName(p.ContainerID)]; !ok || got.IP != p.IP {
		return errors.New("no such pod interface")
	}
	return nil
}
func (f *fakeLinks) PodInterfaces() ([]string, error) {
	var l []string
	for n := range f.ifs {
		l = append(l, n)
	}
	return l, nil
}
func (f *fakeLinks) DeleteInterface(n string) error { delete(f.ifs, n); return nil }

// fakeDP is both a pod hook and the table: pods recorded by the hook reach
// the "kernel" (pods) when the table syncs.
type fakeDP struct {
	pending, pods map[string]netip.Addr
	fail          error
	syncs         int
}

func (f *fakeDP) PodAdded(p dataplane.Pod) { f.pending[p.Iface] = p.IP }
func (f *fakeDP) PodRemoved(iface string)  { delete(f.pending, iface) }
func (f *fakeDP) Request()                 { f.pods = maps.Clone(f.pending) }
func (f *fakeDP) Sync(context.Context) error {
	f.syncs++
	if f.fail != nil {
		return f.fail
	}
	f.pods = maps.Clone(f.pending)
	return nil
}

var (
	_ IPAM    = &fakeIPAM{}
	_ Links   = &fakeLinks{}
	_ PodHook = &fakeDP{}
	_ Table   = &fakeDP{}
)

func newNet() (*Network, *fakeIPAM, *fakeLinks, *fakeDP) {
	i, l, d := &fakeIPAM{atts: map[string]Attachment{}}, &fakeLinks{ifs: map[string]link.Pod{}}, &fakeDP{pending: map[string]netip.Addr{}, pods: map[string]netip.Addr{}}
	n := &Network{IPAM: i, Links: l, Hooks: []PodHook{d}, Table: d, Subnet: netip.MustParsePrefix("10.128.0.0/23"), MTU: 1450, Log: logr.Discard()}
	n.SetReady(true)
	return n, i, l, d
}

func call(cid string) *cniserver.Call {
	return &cniserver.Call{ContainerID: cid, Netns: "/var/run/netns/p", IfName: "eth0", PodNamespace: "ns", PodName: "p-" + cid, CNIVersion: "1.1.0"}
}

func TestAddDel(t *testing.T) {
	n, ipam, links, dp := newNet()
	ctx := context.Background()
	res, err := n.Add(ctx, call("c1"))
	if err != nil {
		t.Fatal(err)
	}
	hostIf := link.HostIfName("c1")
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.128.0.2/32" || res.IPs[0].Gateway.String() != "10.128.0.1" {
		t.Errorf("result IPs %+v", res.IPs)
	}
	if res.Interfaces[1].Sandbox != "/var/run/netns/p" || *res.IPs[0].Interface != 1 {
		t.Errorf("result interfaces %+v", res.Interfaces)
	}
	if p := links.ifs[hostIf]; p.MTU != 1450 || p.Gateway.String() != "10.128.0.1" || p.IP.String() != "10.128.0.2" {
		t.Errorf("link set up with %+v", p)
	}
	if dp.pods[hostIf].String() != "10.128.0.2" || dp.syncs != 1 {
		t.Errorf("table not programmed by one sync: %v after %d syncs", dp.pods, dp.syncs)
	}
	// A retried ADD (the runtime never saw the reply) gets the same address.
	res2, err := n.Add(ctx, call("c1"))
	if err != nil || res2.IPs[0].Address.String() != "10.128.0.2/32" {
		t.Errorf("retried ADD: %v %v", res2, err)
	}
	if err := n.Check(ctx, call("c1")); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	for range 2 { // DEL is idempotent
		if err := n.Del(ctx, call("c1")); err != nil {
			t.Fatal(err)
		}
	}
	if len(ipam.atts)+len(links.ifs)+len(dp.pods) != 0 {
		t.Errorf("left after DEL: %v %v %v", ipam.atts, links.ifs, dp.pods)
	}
	if err := n.Del(ctx, call("never-seen")); err != nil {
		t.Errorf("DEL of an unknown container: %v", err)
	}
	var ce *types.Error
	if err := n.Check(ctx, call("c1")); !errors.As(err, &ce) || ce.Code != types.ErrUnknownContainer {
		t.Errorf("CHECK after DEL: %v", err)
	}
}

func TestAddFailureUndoes(t *testing.T) {
	for _, c := range []struct {
		name string
		set  func(*fakeLinks, *fakeDP)
	}{
		{"link", func(l *fakeLinks, _ *fakeDP) { l.failSetup = errors.New("netlink: file exists") }},
		{"dataplane", func(_ *fakeLinks, d *fakeDP) { d.fail = errors.New("nft: busy") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, ipam, links, dp := newNet()
			c.set(links, dp)
			if _, err := n.Add(context.Background(), call("c1")); err == nil {
				t.Fatal("ADD succeeded")
			}
			if len(ipam.atts)+len(links.ifs)+len(dp.pods) != 0 {
				t.Errorf("left after a failed ADD: %v %v %v", ipam.atts, links.ifs, dp.pods)
			}
		})
	}
	n, ipam, _, _ := newNet()
	ipam.fail = fmt.Errorf("subnet 10.128.0.0/23 exhausted")
	_, err := n.Add(context.Background(), call("c1"))
	var ce *types.Error
	if !errors.As(err, &ce) || ce.Code != types.ErrTryAgainLater {
		t.Errorf("exhausted IPAM: %v, want TRY_AGAIN_LATER", err)
	}
}

func TestGCAndRestore(t *testing.T) {
	n, ipam, links, dp := newNet()
	ctx := context.Background()
	for _, c := range []string{"keep", "gone1", "gone2"} {
		if _, err := n.Add(ctx, call(c)); err != nil {
			t.Fatal(err)
		}
	}
	links.ifs["slpstrayiface0"] = link.Pod{}
	if err := n.GC(ctx, []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	if len(ipam.atts) != 1 || len(links.ifs) != 1 || len(dp.pods) != 1 {
		t.Errorf("after GC: ipam %v links %v dataplane %v", ipam.atts, links.ifs, dp.pods)
	}
	pods, err := n.Pods()
	if err != nil || len(pods) != 1 || pods[0].Iface != link.HostIfName("keep") {
		t.Errorf("Pods() = %v %v", pods, err)
	}
	if err := n.Status(ctx); err != nil {
		t.Error(err)
	}
	// Before the node is initialised: STATUS says so, DEL asks to retry.
	n.SetReady(false)
	if err := n.Status(ctx); err == nil {
		t.Error("STATUS ready before SetReady")
	}
	var ce *types.Error
	if err := n.Del(ctx, call("keep")); !errors.As(err, &ce) || ce.Code != types.ErrTryAgainLater {
		t.Errorf("DEL before the node is initialised: %v, want TRY_AGAIN_LATER", err)
	}
}
