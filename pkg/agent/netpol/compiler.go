package netpol

import (
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
	"github.com/sluice-net/sluice/pkg/policy"
)

// Compiler is Build kept up to date one object at a time. It holds the objects Build would
// be given (mode, namespaces, VNIDs, pods, policies, node addresses) and the desired
// objects of one node, indexed so that a change re-evaluates only what it touches:
//
//   - a pod: the policies of its namespace (does one isolate it, if it is local), the peer
//     sets of its namespace and those whose namespaceSelector matches its namespace's
//     labels, the named-port sets of its ports, its VNID's set;
//   - a namespace's labels: the peer sets with a namespaceSelector, for its pods only;
//   - a policy: its own chains and sets, and the local pods of its namespace;
//   - a VNID: the pods of that namespace.
//
// Objects no longer needed are dropped at the next State or Render (so a change that
// removes and re-adds a reference does not rebuild a set). Render writes only what changed
// since the last Commit. For the same objects, State equals Build's State.
//
// A pod whose namespace the Compiler does not know is kept but is not part of the input
// (Build would refuse it; the agent leaves such pods out) until the namespace arrives.
// A Compiler is not safe for concurrent use.
type Compiler struct {
	node    string
	mode    policy.Mode
	nodeIPs map[netip.Addr]bool

	namespaces map[string]labels.Set // known namespaces: their labels as selectors see them
	vnids      map[string]uint32
	pods       map[string]*podEntry // every pod given, by namespace/name
	podsByNS   map[string]map[string]*podEntry
	byIP       map[netip.Addr]map[string]*podEntry // pods of known namespaces, by address
	policies   map[string]*policyEntry             // by namespace/name
	policyNS   map[string][]*policyEntry           // by namespace, sorted by key

	// Derived objects in use, with reference counts.
	isolated   map[string]*isolatedChain // by chain name
	isoByNS    map[string]map[string]*isolatedChain
	dirs       map[string]*policyDir          // by chain name
	sets       map[string]*ruleSet            // peer, CIDR and named-port sets, by name
	peersByNS  map[string]map[string]*ruleSet // peer sets without namespaceSelector, by namespace
	nsSelSets  map[string]*ruleSet            // peer sets with a namespaceSelector
	nsMatch    map[string][]*ruleSet          // cache: namespace → nsSelSets matching its labels
	portSets   map[string][]*ruleSet          // named-port sets by port name
	tenants    map[uint32]*tenant
	candidates []func()                   // objects whose last reference went: dropped by settle unless used again
	pending    map[string]map[string]bool // namespace → policies changed since the last settle

	obj objects
}

type podEntry struct {
	pod     policy.Pod
	present bool // its namespace is known: part of the input
	active  bool // present with an IPv4 address no other present pod has (Build's pods)
	// A local active pod's dispatch.
	in, eg *isolatedChain
	tenant *tenant
}

type policyEntry struct {
	np      *networkingv1.NetworkPolicy
	key     string
	podSel  labels.Selector
	ingress bool
	egress  bool
	dir     [2]direction // [0] egress, [1] ingress
}

// isolatedChain is the chain of pods isolated by exactly policies in one direction.
type isolatedChain struct {
	name      string
	namespace string
	ingress   bool
	policies  []string // keys, sorted
	refs      int      // local pods
}

// policyDir is one policy's chain for one direction, in use by isolated chains.
type policyDir struct {
	name    string
	key     string
	ingress bool
	d       direction
	refs    int // isolated chains
}

// ruleSet is a per-object set rules refer to.
type ruleSet struct {
	spec setSpec
	refs int // policy directions
}

type tenant struct {
	vnid uint32
	refs int // local pods
}

// NewCompiler returns a Compiler for node in NetworkPolicy mode with no objects: what Build
// returns for policy.Input{} (every local pod interface closed).
func NewCompiler(node string) *Compiler {
	c := &Compiler{node: node, mode: policy.ModeNetworkPolicy, nodeIPs: map[netip.Addr]bool{},
		namespaces: map[string]labels.Set{}, vnids: map[string]uint32{}, pods: map[string]*podEntry{},
		podsByNS: map[string]map[string]*podEntry{}, byIP: map[netip.Addr]map[string]*podEntry{},
		policies: map[string]*policyEntry{}, policyNS: map[string][]*policyEntry{}, obj: newObjects()}
	c.derive()
	return c
}

// Mode is the compiler's mode (never "").
func (c *Compiler) Mode() policy.Mode { return c.mode }

// SetMode changes the isolation mode ("" is NetworkPolicy). It refuses a mode Build would
// refuse and keeps the current one. A mode change derives every object again (the
// partial render still carries only what differs).
func (c *Compiler) SetMode(m policy.Mode) error {
	if m == "" {
		m = policy.ModeNetworkPolicy
	}
	if _, err := policy.Compile(policy.Input{Mode: m}); err != nil {
		return err
	}
	if m == c.mode {
		return nil
	}
	c.mode = m
	c.derive()
	return nil
}

// SetNodeIPs sets the addresses of the cluster's nodes that are not pods (Build's nodeIPs).
func (c *Compiler) SetNodeIPs(ips []netip.Addr) {
	next := map[netip.Addr]bool{}
	for _, a := range ips {
		if a = a.Unmap(); a.Is4() {
			next[a] = true
		}
	}
	var changed []netip.Addr
	for a := range next {
		if !c.nodeIPs[a] {
			changed = append(changed, a)
		}
	}
	for a := range c.nodeIPs {
		if !next[a] {
			changed = append(changed, a)
		}
	}
	c.nodeIPs = next
	if c.mode == policy.ModeMultitenant {
		for _, a := range changed {
			c.refreshGlobal(a)
		}
	}
}

// SetNamespace adds or updates a namespace.
func (c *Compiler) SetNamespace(ns *corev1.Namespace) {
	next := policy.NamespaceLabels(ns)
	old, known := c.namespaces[ns.Name]
	if !known {
		c.namespaces[ns.Name] = next
		delete(c.nsMatch, ns.Name)
		for _, e := range sortedPods(c.podsByNS[ns.Name]) {
			c.attach(e)
		}
		return
	}
	if maps.Equal(old, next) {
		return
	}
	c.namespaces[ns.Name] = next
	delete(c.nsMatch, ns.Name)
	// Only the peer sets with a namespaceSelector look at namespace labels.
	for _, rs := range c.nsSelSets {
		was, is := rs.spec.nsSel.Matches(old), rs.spec.nsSel.Matches(next)
		if was == is {
			continue
		}
		for _, e := range c.podsByNS[ns.Name] {
			if !e.active || !rs.spec.podSel.Matches(labels.Set(e.pod.Labels)) {
				continue
			}
			if is {
				c.obj.putElem(rs.spec.name, Element{Key: []string{e.pod.IP.String()}})
			} else {
				c.obj.delElem(rs.spec.name, e.pod.IP.String())
			}
		}
	}
}

// DeleteNamespace removes a namespace; its pods leave the input until it comes back.
func (c *Compiler) DeleteNamespace(name string) {
	if _, known := c.namespaces[name]; !known {
		return
	}
	for _, e := range sortedPods(c.podsByNS[name]) {
		c.detach(e)
	}
	delete(c.namespaces, name)
	delete(c.nsMatch, name)
}

// SetVNID sets a namespace's VNID (Multitenant); DeleteVNID removes it.
func (c *Compiler) SetVNID(ns string, v uint32) { c.changeVNID(ns, v, true) }

// DeleteVNID forgets a namespace's VNID.
func (c *Compiler) DeleteVNID(ns string) { c.changeVNID(ns, 0, false) }

func (c *Compiler) changeVNID(ns string, v uint32, set bool) {
	old, had := c.vnids[ns]
	if had == set && old == v {
		return
	}
	var affected []*podEntry
	if c.mode == policy.ModeMultitenant {
		for _, e := range sortedPods(c.podsByNS[ns]) {
			if e.active {
				affected = append(affected, e)
				c.podOut(e)
			}
		}
	}
	if set {
		c.vnids[ns] = v
	} else {
		delete(c.vnids, ns)
	}
	for _, e := range affected {
		c.podIn(e)
	}
}

// SetPod adds or replaces a pod (by namespace/name).
func (c *Compiler) SetPod(p policy.Pod) {
	p.IP = p.IP.Unmap()
	key := p.Key()
	if old := c.pods[key]; old != nil {
		if podEqual(&old.pod, &p) {
			return
		}
		c.removePod(old)
	}
	e := &podEntry{pod: p}
	c.pods[key] = e
	byNS := c.podsByNS[p.Namespace]
	if byNS == nil {
		byNS = map[string]*podEntry{}
		c.podsByNS[p.Namespace] = byNS
	}
	byNS[key] = e
	c.attach(e)
}

// DeletePod removes a pod.
func (c *Compiler) DeletePod(key string) {
	if e := c.pods[key]; e != nil {
		c.removePod(e)
	}
}

func (c *Compiler) removePod(e *podEntry) {
	c.detach(e)
	key := e.pod.Key()
	delete(c.pods, key)
	delete(c.podsByNS[e.pod.Namespace], key)
	if len(c.podsByNS[e.pod.Namespace]) == 0 {
		delete(c.podsByNS, e.pod.Namespace)
	}
}

func podEqual(x, y *policy.Pod) bool {
	return x.Namespace == y.Namespace && x.Name == y.Name && x.IP == y.IP && x.Node == y.Node &&
		maps.Equal(x.Labels, y.Labels) && slices.Equal(x.Ports, y.Ports)
}

// SetPolicy adds or replaces a NetworkPolicy. It refuses a policy the model cannot
// represent exactly (*policy.InvalidPolicyError) and keeps the previous one: the caller
// decides what stands in for it.
func (c *Compiler) SetPolicy(np *networkingv1.NetworkPolicy) error {
	if errs := policy.Validate(np); len(errs) > 0 {
		return &policy.InvalidPolicyError{Policy: np.Namespace + "/" + np.Name, Errs: errs}
	}
	np = np.DeepCopy()
	pe := &policyEntry{np: np, key: np.Namespace + "/" + np.Name, podSel: policy.MustSelector(&np.Spec.PodSelector)}
	pe.ingress, pe.egress = policy.EffectiveTypes(np)
	pe.dir[0] = compileDirection(np, pe.key, false)
	pe.dir[1] = compileDirection(np, pe.key, true)
	ps := slices.DeleteFunc(c.policyNS[np.Namespace], func(x *policyEntry) bool { return x.key == pe.key })
	i, _ := slices.BinarySearchFunc(ps, pe.key, func(x *policyEntry, k string) int { return strings.Compare(x.key, k) })
	c.policyNS[np.Namespace] = slices.Insert(ps, i, pe)
	c.policies[pe.key] = pe
	c.policyChanged(np.Namespace, pe.key)
	return nil
}

// DeletePolicy removes a NetworkPolicy (by namespace/name).
func (c *Compiler) DeletePolicy(key string) {
	pe := c.policies[key]
	if pe == nil {
		return
	}
	delete(c.policies, key)
	ns := pe.np.Namespace
	c.policyNS[ns] = slices.DeleteFunc(c.policyNS[ns], func(x *policyEntry) bool { return x.key == key })
	if len(c.policyNS[ns]) == 0 {
		delete(c.policyNS, ns)
	}
	c.policyChanged(ns, key)
}

// policyChanged records a change of policy key in namespace ns (NetworkPolicy mode): its
// chains in use get its new rules now; the isolated chains and local pods it can touch are
// re-evaluated once per settle for all the policies that changed since (redispatch).
func (c *Compiler) policyChanged(ns, key string) {
	if c.mode != policy.ModeNetworkPolicy {
		return
	}
	if pe := c.policies[key]; pe != nil {
		for i, ingress := range []bool{false, true} {
			if pd := c.dirs[policyChainName(key, ingress)]; pd != nil {
				c.setDirection(pd, pe.dir[i])
			}
		}
	}
	if c.pending[ns] == nil {
		c.pending[ns] = map[string]bool{}
	}
	c.pending[ns][key] = true
}

// redispatch re-evaluates what the policies changed since the last settle touch, namespace
// by namespace: the isolated chains naming one of them (a jump to its chain comes or goes
// with its rules), and the local pods. For a few changed policies, only the pods whose
// selection by one of them flips move (flip: one selector match per local pod and policy);
// when many of a namespace's policies changed at once (a relist, the start), every local pod
// of the namespace is dispatched once against all of them instead, so that a pod does not
// move through an isolated chain per policy on its way.
func (c *Compiler) redispatch() {
	for _, ns := range sortedKeys(c.pending) {
		keys := sortedKeys(c.pending[ns])
		for _, ic := range c.isoByNS[ns] {
			for _, key := range keys {
				if _, named := slices.BinarySearch(ic.policies, key); named {
					c.putIsolatedChain(ic)
					break
				}
			}
		}
		if len(keys) > 1 && len(keys)*8 > len(c.policyNS[ns]) {
			for _, e := range c.podsByNS[ns] {
				if e.active && e.pod.Node == c.node {
					c.dispatch(e)
				}
			}
			continue
		}
		for _, key := range keys {
			c.flip(ns, key)
		}
	}
	clear(c.pending)
}

// flip moves the local pods of ns whose selection by policy key differs from what their
// isolated chains say. A pod still selected (or still not) keeps its chain; pods that leave
// the same chain move to the same next chain, whose name is computed once.
func (c *Compiler) flip(ns, key string) {
	pe := c.policies[key]
	type move struct {
		from    string // the current chain's name, "" when not isolated
		ingress bool
	}
	type target struct {
		keys []string
		name string
	}
	next := map[move]target{}
	for _, e := range c.podsByNS[ns] {
		if !e.active || e.pod.Node != c.node {
			continue
		}
		var sel labels.Set
		for _, ingress := range []bool{true, false} {
			cur := e.eg
			if ingress {
				cur = e.in
			}
			was := false
			if cur != nil {
				_, was = slices.BinarySearch(cur.policies, key)
			}
			is := false
			if pe != nil && (ingress && pe.ingress || !ingress && pe.egress) {
				if sel == nil {
					sel = labels.Set(e.pod.Labels)
				}
				is = pe.podSel.Matches(sel)
			}
			if was == is {
				continue
			}
			m := move{ingress: ingress}
			if cur != nil {
				m.from = cur.name
			}
			t, ok := next[m]
			if !ok {
				var keys []string
				if cur != nil {
					keys = slices.Clone(cur.policies)
				}
				i, _ := slices.BinarySearch(keys, key)
				if is {
					keys = slices.Insert(keys, i, key)
				} else {
					keys = slices.Delete(keys, i, i+1)
				}
				t = target{keys: keys}
				if len(keys) > 0 {
					t.name = isolatedChainName(keys, ingress)
				}
				next[m] = t
			}
			c.isolate(e, ingress, t.keys, t.name)
		}
	}
}

// attach makes a pod of a known namespace part of the input.
func (c *Compiler) attach(e *podEntry) {
	if e.present {
		return
	}
	if _, known := c.namespaces[e.pod.Namespace]; !known {
		return
	}
	e.present = true
	if !e.pod.IP.IsValid() {
		return
	}
	g := c.byIP[e.pod.IP]
	if g == nil {
		g = map[string]*podEntry{}
		c.byIP[e.pod.IP] = g
	}
	g[e.pod.Key()] = e
	c.refreshIP(e.pod.IP)
}

// detach takes a pod out of the input.
func (c *Compiler) detach(e *podEntry) {
	if !e.present {
		return
	}
	if e.active {
		c.deactivate(e)
	}
	e.present = false
	if g := c.byIP[e.pod.IP]; g != nil {
		delete(g, e.pod.Key())
		if len(g) == 0 {
			delete(c.byIP, e.pod.IP)
		}
		c.refreshIP(e.pod.IP)
	}
}

// refreshIP: a pod is active when no other pod of the input has its address (an address
// two pods claim is a stale cache: like the model's EndpointForIP, it belongs to nobody).
func (c *Compiler) refreshIP(ip netip.Addr) {
	g := c.byIP[ip]
	for _, e := range sortedPods(g) {
		want := ip.Is4() && len(g) == 1
		if want && !e.active {
			e.active = true
			c.podIn(e)
		} else if !want && e.active {
			c.deactivate(e)
		}
	}
	if c.mode == policy.ModeMultitenant {
		c.refreshGlobal(ip)
	}
}

func (c *Compiler) deactivate(e *podEntry) {
	c.podOut(e)
	e.active = false
	if c.mode == policy.ModeMultitenant {
		c.refreshGlobal(e.pod.IP)
	}
}

// podIn adds an active pod's elements: peer, named-port and VNID sets everywhere; loopback
// and dispatch when it is local.
func (c *Compiler) podIn(e *podEntry) {
	ip := e.pod.IP.String()
	for _, rs := range c.peerSetsFor(e.pod.Namespace) {
		if rs.spec.podSel.Matches(labels.Set(e.pod.Labels)) {
			c.obj.putElem(rs.spec.name, Element{Key: []string{ip}})
		}
	}
	for _, rs := range c.portSetsFor(&e.pod) {
		for _, el := range rs.spec.portElements(&e.pod) {
			c.obj.putElem(rs.spec.name, el)
		}
	}
	if c.mode == policy.ModeMultitenant {
		if v, ok := c.vnids[e.pod.Namespace]; ok {
			if t := c.tenants[v]; t != nil {
				c.obj.putElem(tenantSetName(v), Element{Key: []string{ip}})
			}
		}
		c.refreshGlobal(e.pod.IP)
	}
	if e.pod.Node != c.node {
		return
	}
	c.obj.putElem(SetLoopback, Element{Key: []string{ip, ip}, Comment: e.pod.Key()})
	switch c.mode {
	case policy.ModeNetworkPolicy:
		c.dispatch(e)
	case policy.ModeMultitenant:
		v, ok := c.vnids[e.pod.Namespace]
		if !ok {
			return
		}
		c.obj.putElem(MapEgressPods, Element{Key: []string{ip}, Value: "accept", Comment: e.pod.Key()})
		verdict := "accept"
		if v != 0 {
			e.tenant = c.acquireTenant(v)
			verdict = "goto " + tenantChainName(v)
		}
		c.obj.putElem(MapIngressPods, Element{Key: []string{ip}, Value: verdict, Comment: e.pod.Key()})
	}
}

// podOut removes what podIn added.
func (c *Compiler) podOut(e *podEntry) {
	ip := e.pod.IP.String()
	for _, rs := range c.peerSetsFor(e.pod.Namespace) {
		c.obj.delElem(rs.spec.name, ip)
	}
	for _, rs := range c.portSetsFor(&e.pod) {
		for _, el := range rs.spec.portElements(&e.pod) {
			c.obj.delElem(rs.spec.name, elementKey(el))
		}
	}
	if c.mode == policy.ModeMultitenant {
		if v, ok := c.vnids[e.pod.Namespace]; ok {
			if c.tenants[v] != nil {
				c.obj.delElem(tenantSetName(v), ip)
			}
		}
		c.refreshGlobal(e.pod.IP)
	}
	if e.pod.Node != c.node {
		return
	}
	c.obj.delElem(SetLoopback, ip+" . "+ip)
	c.obj.delElem(MapEgressPods, ip)
	c.obj.delElem(MapIngressPods, ip)
	c.releaseIsolated(e.in)
	c.releaseIsolated(e.eg)
	e.in, e.eg = nil, nil
	if e.tenant != nil {
		c.releaseTenant(e.tenant)
		e.tenant = nil
	}
}

// dispatch sets a local pod's verdicts in NetworkPolicy mode: accept, or the chain of the
// policies isolating it.
func (c *Compiler) dispatch(e *podEntry) {
	sel := labels.Set(e.pod.Labels)
	for _, ingress := range []bool{true, false} {
		var keys []string
		for _, pe := range c.policyNS[e.pod.Namespace] {
			if (ingress && pe.ingress || !ingress && pe.egress) && pe.podSel.Matches(sel) {
				keys = append(keys, pe.key)
			}
		}
		name := ""
		if len(keys) > 0 {
			name = isolatedChainName(keys, ingress)
		}
		c.isolate(e, ingress, keys, name)
	}
}

// isolate gives a local pod's direction the chain name of the policies keys (sorted; name
// is isolatedChainName(keys), "" when keys is empty: not isolated, accept).
func (c *Compiler) isolate(e *podEntry, ingress bool, keys []string, name string) {
	cur := &e.eg
	m := MapEgressPods
	if ingress {
		cur, m = &e.in, MapIngressPods
	}
	var next *isolatedChain
	verdict := "accept"
	if len(keys) > 0 {
		if *cur != nil && (*cur).name == name {
			return
		}
		next = c.acquireIsolated(name, e.pod.Namespace, keys, ingress)
		verdict = "goto " + name
	} else if *cur == nil {
		// Not isolated before either; make sure the element is there (a new pod).
		c.obj.putElem(m, Element{Key: []string{e.pod.IP.String()}, Value: verdict, Comment: e.pod.Key()})
		return
	}
	c.releaseIsolated(*cur)
	*cur = next
	c.obj.putElem(m, Element{Key: []string{e.pod.IP.String()}, Value: verdict, Comment: e.pod.Key()})
}

func isolatedChainName(keys []string, ingress bool) string {
	if ingress {
		return objectName(prefixIsolatedIngress, "ingress|"+strings.Join(keys, ","), keys[0])
	}
	return objectName(prefixIsolatedEgress, "egress|"+strings.Join(keys, ","), keys[0])
}

func (c *Compiler) acquireIsolated(name, ns string, keys []string, ingress bool) *isolatedChain {
	if ic := c.isolated[name]; ic != nil {
		ic.refs++
		return ic
	}
	ic := &isolatedChain{name: name, namespace: ns, ingress: ingress, policies: keys, refs: 1}
	c.isolated[name] = ic
	if c.isoByNS[ns] == nil {
		c.isoByNS[ns] = map[string]*isolatedChain{}
	}
	c.isoByNS[ns][name] = ic
	for _, k := range keys {
		c.acquireDirection(k, ingress)
	}
	c.putIsolatedChain(ic)
	return ic
}

// putIsolatedChain (re)writes an isolated chain: a jump to each policy's chain that has
// rules, then drop.
func (c *Compiler) putIsolatedChain(ic *isolatedChain) {
	dir := "egress"
	if ic.ingress {
		dir = "ingress"
	}
	ch := &Chain{Name: ic.name, Comment: dir + " isolated by " + strings.Join(ic.policies, ",")}
	for _, k := range ic.policies {
		if pd := c.dirs[policyChainName(k, ic.ingress)]; pd != nil && len(pd.d.rules) > 0 {
			ch.Rules = append(ch.Rules, Rule{Rule: "jump " + pd.name})
		}
	}
	ch.Rules = append(ch.Rules, Rule{Rule: "counter drop", Comment: "no " + dir + " rule allows"})
	if old := c.obj.chains[ic.name]; old == nil || !slices.Equal(old.Rules, ch.Rules) || old.Comment != ch.Comment {
		c.obj.putChain(ch)
	}
}

func (c *Compiler) releaseIsolated(ic *isolatedChain) {
	if ic == nil {
		return
	}
	ic.refs--
	if ic.refs == 0 {
		c.candidates = append(c.candidates, func() {
			if ic.refs > 0 || c.isolated[ic.name] != ic {
				return
			}
			delete(c.isolated, ic.name)
			delete(c.isoByNS[ic.namespace], ic.name)
			if len(c.isoByNS[ic.namespace]) == 0 {
				delete(c.isoByNS, ic.namespace)
			}
			c.obj.delChain(ic.name)
			for _, k := range ic.policies {
				c.releaseDirection(c.dirs[policyChainName(k, ic.ingress)])
			}
		})
	}
}

// acquireDirection takes a reference on policy key's chain for one direction, building it
// (and its sets) on first use.
func (c *Compiler) acquireDirection(key string, ingress bool) {
	name := policyChainName(key, ingress)
	if pd := c.dirs[name]; pd != nil {
		pd.refs++
		return
	}
	pd := &policyDir{name: name, key: key, ingress: ingress, refs: 1}
	c.dirs[name] = pd
	i := 0
	if ingress {
		i = 1
	}
	c.setDirection(pd, c.policies[key].dir[i])
}

// setDirection gives a policy direction in use its compiled rules: new sets are taken,
// sets no longer named are released, the chain is written (or removed when it has no
// rules: nothing jumps to it).
func (c *Compiler) setDirection(pd *policyDir, d direction) {
	old := pd.d
	pd.d = d
	for i := range d.sets {
		c.acquireSet(&d.sets[i])
	}
	for i := range old.sets {
		c.releaseSet(old.sets[i].name)
	}
	if len(d.rules) == 0 {
		c.obj.delChain(pd.name)
		return
	}
	if cur := c.obj.chains[pd.name]; cur == nil || !slices.Equal(cur.Rules, d.rules) || cur.Comment != d.comment {
		c.obj.putChain(&Chain{Name: pd.name, Comment: d.comment, Rules: d.rules})
	}
}

func (c *Compiler) releaseDirection(pd *policyDir) {
	if pd == nil {
		return
	}
	pd.refs--
	if pd.refs == 0 {
		c.candidates = append(c.candidates, func() {
			if pd.refs > 0 || c.dirs[pd.name] != pd {
				return
			}
			delete(c.dirs, pd.name)
			c.obj.delChain(pd.name)
			for i := range pd.d.sets {
				c.releaseSet(pd.d.sets[i].name)
			}
		})
	}
}

// acquireSet takes a reference on a per-object set, filling it on first use from the pods
// its spec can match (through the namespace indexes).
func (c *Compiler) acquireSet(sp *setSpec) {
	if rs := c.sets[sp.name]; rs != nil {
		rs.refs++
		return
	}
	rs := &ruleSet{spec: *sp, refs: 1}
	c.sets[sp.name] = rs
	c.obj.putSet(sp.set())
	switch sp.kind {
	case setCIDR:
		for _, el := range sp.cidrElements() {
			c.obj.putElem(sp.name, el)
		}
	case setPeers:
		var nss []string
		if sp.nsSel == nil {
			if c.peersByNS[sp.namespace] == nil {
				c.peersByNS[sp.namespace] = map[string]*ruleSet{}
			}
			c.peersByNS[sp.namespace][sp.name] = rs
			if _, known := c.namespaces[sp.namespace]; known {
				nss = []string{sp.namespace}
			}
		} else {
			c.nsSelSets[sp.name] = rs
			clear(c.nsMatch)
			for ns, l := range c.namespaces {
				if sp.nsSel.Matches(l) {
					nss = append(nss, ns)
				}
			}
		}
		for _, ns := range nss {
			for _, e := range c.podsByNS[ns] {
				if e.active && sp.podSel.Matches(labels.Set(e.pod.Labels)) {
					c.obj.putElem(sp.name, Element{Key: []string{e.pod.IP.String()}})
				}
			}
		}
	case setPort:
		c.portSets[sp.port] = append(c.portSets[sp.port], rs)
		for _, e := range c.pods {
			if e.active {
				for _, el := range sp.portElements(&e.pod) {
					c.obj.putElem(sp.name, el)
				}
			}
		}
	}
}

func (c *Compiler) releaseSet(name string) {
	rs := c.sets[name]
	rs.refs--
	if rs.refs == 0 {
		c.candidates = append(c.candidates, func() {
			if rs.refs > 0 || c.sets[name] != rs {
				return
			}
			delete(c.sets, name)
			c.obj.delSet(name)
			switch {
			case rs.spec.kind == setPeers && rs.spec.nsSel == nil:
				delete(c.peersByNS[rs.spec.namespace], name)
				if len(c.peersByNS[rs.spec.namespace]) == 0 {
					delete(c.peersByNS, rs.spec.namespace)
				}
			case rs.spec.kind == setPeers:
				delete(c.nsSelSets, name)
				clear(c.nsMatch)
			case rs.spec.kind == setPort:
				c.portSets[rs.spec.port] = slices.DeleteFunc(c.portSets[rs.spec.port], func(x *ruleSet) bool { return x == rs })
				if len(c.portSets[rs.spec.port]) == 0 {
					delete(c.portSets, rs.spec.port)
				}
			}
		})
	}
}

// peerSetsFor lists the peer sets a pod of namespace ns may belong to: those of ns without
// a namespaceSelector and those whose namespaceSelector matches ns's labels.
func (c *Compiler) peerSetsFor(ns string) []*ruleSet {
	matching, ok := c.nsMatch[ns]
	if !ok {
		l, known := c.namespaces[ns]
		for _, rs := range c.nsSelSets {
			if known && rs.spec.nsSel.Matches(l) {
				matching = append(matching, rs)
			}
		}
		c.nsMatch[ns] = matching
	}
	if len(c.peersByNS[ns]) == 0 {
		return matching
	}
	out := slices.Clone(matching)
	for _, rs := range c.peersByNS[ns] {
		out = append(out, rs)
	}
	return out
}

// portSetsFor lists the named-port sets naming one of p's ports.
func (c *Compiler) portSetsFor(p *policy.Pod) []*ruleSet {
	var out []*ruleSet
	for i, cp := range p.Ports {
		if slices.ContainsFunc(p.Ports[:i], func(x policy.ContainerPort) bool { return x.Name == cp.Name }) {
			continue
		}
		out = append(out, c.portSets[cp.Name]...)
	}
	return out
}

func tenantChainName(v uint32) string { return prefixTenant + strconv.FormatUint(uint64(v), 10) }
func tenantSetName(v uint32) string   { return tenantChainName(v) + suffixTenantSet }

func (c *Compiler) acquireTenant(v uint32) *tenant {
	if t := c.tenants[v]; t != nil {
		t.refs++
		return t
	}
	t := &tenant{vnid: v, refs: 1}
	c.tenants[v] = t
	set := tenantSetName(v)
	c.obj.putSet(&Set{Name: set, Type: "ipv4_addr", Comment: "pods of VNID " + strconv.FormatUint(uint64(v), 10)})
	for ns, nv := range c.vnids {
		if nv != v {
			continue
		}
		for _, e := range c.podsByNS[ns] {
			if e.active {
				c.obj.putElem(set, Element{Key: []string{e.pod.IP.String()}})
			}
		}
	}
	c.obj.putChain(&Chain{Name: tenantChainName(v), Comment: "ingress of VNID " + strconv.FormatUint(uint64(v), 10), Rules: []Rule{
		{Rule: "ip saddr @" + set + " accept"},
		{Rule: "ip saddr @" + SetTenantGlobal + " accept"},
		{Rule: "ip saddr != @" + dataplane.SetClusterCIDR + " accept", Comment: "not from the pod network: global"},
		{Rule: "counter drop", Comment: "another VNID, or an unknown pod address"},
	}})
	return t
}

func (c *Compiler) releaseTenant(t *tenant) {
	t.refs--
	if t.refs == 0 {
		c.candidates = append(c.candidates, func() {
			if t.refs > 0 || c.tenants[t.vnid] != t {
				return
			}
			delete(c.tenants, t.vnid)
			c.obj.delChain(tenantChainName(t.vnid))
			c.obj.delSet(tenantSetName(t.vnid))
		})
	}
}

// refreshGlobal sets ip's membership of tenant-global (Multitenant): the one pod holding ip
// is global when its namespace has VNID 0; an address no pod holds is global when it is a
// node's.
func (c *Compiler) refreshGlobal(ip netip.Addr) {
	if !ip.Is4() {
		return
	}
	want := c.nodeIPs[ip]
	for _, e := range c.byIP[ip] {
		if e.active {
			v, ok := c.vnids[e.pod.Namespace]
			want = ok && v == 0
		}
	}
	if want {
		c.obj.putElem(SetTenantGlobal, Element{Key: []string{ip.String()}})
	} else {
		c.obj.delElem(SetTenantGlobal, ip.String())
	}
}

// derive drops every derived object and derives them again from the inputs (a mode
// change, and the start); the tracked objects turn that into the difference.
func (c *Compiler) derive() {
	for _, name := range sortedKeys(c.obj.chains) {
		c.obj.delChain(name)
	}
	for _, name := range sortedKeys(c.obj.sets) {
		c.obj.delSet(name)
	}
	c.isolated, c.isoByNS, c.dirs = map[string]*isolatedChain{}, map[string]map[string]*isolatedChain{}, map[string]*policyDir{}
	c.sets, c.peersByNS, c.nsSelSets = map[string]*ruleSet{}, map[string]map[string]*ruleSet{}, map[string]*ruleSet{}
	c.nsMatch, c.portSets, c.tenants = map[string][]*ruleSet{}, map[string][]*ruleSet{}, map[uint32]*tenant{}
	c.candidates, c.pending = nil, map[string]map[string]bool{}
	b := newBuilder(policy.Input{Mode: c.mode})
	b.addStatic()
	for _, name := range sortedKeys(b.chains) {
		c.obj.putChain(b.chains[name])
	}
	for _, name := range sortedKeys(b.sets) {
		c.obj.putSet(b.sets[name])
	}
	for _, e := range sortedPods(c.pods) {
		e.in, e.eg, e.tenant = nil, nil, nil
		if e.active {
			c.podIn(e)
		}
	}
	if c.mode == policy.ModeMultitenant {
		for a := range c.nodeIPs {
			c.refreshGlobal(a)
		}
	}
}

// settle applies the pending policy changes (redispatch), then drops the objects whose last
// reference went (isolated chains before the policy chains they jump to, before the sets
// those name).
func (c *Compiler) settle() {
	c.redispatch()
	for len(c.candidates) > 0 {
		cs := c.candidates
		c.candidates = nil
		for _, f := range cs {
			f()
		}
	}
}

// State is the desired objects; for the same objects it equals Build's State.
func (c *Compiler) State() State {
	c.settle()
	st := c.obj.state()
	st.Mode = c.mode
	return st
}

// Render writes into tx what changed since the last Commit (or since NewCompiler): only
// the touched elements, the chains whose rules changed, and the objects that came or went.
// When an object kept its name but changed its definition it writes a full Render + Prune
// instead, pruning against what the table held at the last Commit. After any failed
// transaction the next one must be a full render (Render(tx, c.State()) and Prune against
// the listed table); call Commit once a transaction carrying the changes succeeded.
func (c *Compiler) Render(tx dataplane.Tx) {
	c.settle()
	if c.obj.render(tx) {
		return
	}
	st := c.State()
	chains, sets := c.obj.committedObjects()
	Render(tx, st)
	Prune(tx, chains, sets, st)
}

// Commit records that the table holds the desired objects.
func (c *Compiler) Commit() {
	c.settle()
	c.obj.commit()
}

// Committed names the per-object chains and sets the table holds after the last Commit.
func (c *Compiler) Committed() (chains, sets []string) { return c.obj.committedObjects() }

// Input is the compiler's objects as Build's input (pods of unknown namespaces left out),
// with the node addresses.
func (c *Compiler) Input() (policy.Input, []netip.Addr) {
	in := policy.Input{Mode: c.mode, VNIDs: maps.Clone(c.vnids)}
	for _, name := range sortedKeys(c.namespaces) {
		in.Namespaces = append(in.Namespaces, corev1.Namespace{})
		in.Namespaces[len(in.Namespaces)-1].Name = name
		in.Namespaces[len(in.Namespaces)-1].Labels = maps.Clone(c.namespaces[name])
	}
	for _, e := range sortedPods(c.pods) {
		if e.present {
			in.Pods = append(in.Pods, e.pod)
		}
	}
	for _, k := range sortedKeys(c.policies) {
		in.Policies = append(in.Policies, *c.policies[k].np)
	}
	var ips []netip.Addr
	for a := range c.nodeIPs {
		ips = append(ips, a)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	return in, ips
}

func sortedPods(m map[string]*podEntry) []*podEntry {
	out := make([]*podEntry, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}
