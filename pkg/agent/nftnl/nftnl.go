// Package nftnl programs the agent's nftables table over netlink, without
// the nft binary: a dataplane.Backend whose batches the features fill with
// the same knftables objects they give the nft binary (chains, rules as
// text, sets, elements), compiled here into the kernel's messages and sent
// as one transaction per batch.
//
// Rule text is compiled by compile.go into the expressions nft would send
// for it; set and map elements go straight from their fields to bytes (no
// text for the whole table is ever built). What the compiler does not know
// is an error naming the rule, and the batch is not sent.
package nftnl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"

	"github.com/sluice-net/sluice/pkg/agent/dataplane"
)

// elementsPerMessage bounds one NEWSETELEM message: the element list is one
// netlink attribute, whose length field has 16 bits.
const elementsPerMessage = 200

// socketBuffer sizes the socket's buffers. The kernel takes a whole batch
// (one sendmsg) only if it fits the send buffer (30k services are ~20 MB
// of messages), and the acknowledgements (rules are echoed whole) are read
// only once the batch is sent, so the receive buffer must hold them all.
const socketBuffer = 256 << 20

// Table is one nftables table programmed over netlink.
type Table struct {
	name   string
	family nftables.TableFamily
	conn   *nftables.Conn
	copts  []nftables.ConnOption

	mu   sync.Mutex
	sets map[string]SetInfo // committed sets and maps, for element encoding and lookups
	read bool               // sets has been read from the kernel
}

// Option configures a Table.
type Option func(*options)

type options struct{ netnsFD int }

// InNetNS programs the table of the network namespace fd refers to (tests,
// benchmarks); the default is the caller's.
func InNetNS(fd int) Option { return func(o *options) { o.netnsFD = fd } }

// New returns the inet table name, programmed over one lasting netlink
// socket.
func New(name string, opts ...Option) (*Table, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	copts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
				err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], socketBuffer)
				if err != nil { // without CAP_NET_ADMIN: as large as allowed
					err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], socketBuffer)
				}
				serr = errors.Join(serr, err)
			}
		}); err != nil {
			return err
		}
		return serr
	})}
	if o.netnsFD != 0 {
		copts = append(copts, nftables.WithNetNSFd(o.netnsFD))
	}
	conn, err := nftables.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("netlink socket for nftables: %w", err)
	}
	return &Table{name: name, family: nftables.TableFamilyINet, conn: conn, copts: copts, sets: map[string]SetInfo{}}, nil
}

// Close closes the socket.
func (t *Table) Close() error { return t.conn.CloseLasting() }

func (t *Table) table() *nftables.Table { return &nftables.Table{Name: t.name, Family: t.family} }

// List names the table's chains, sets or maps.
func (t *Table) List(_ context.Context, objectType string) ([]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	switch strings.TrimSuffix(objectType, "s") {
	case "chain":
		chains, err := t.conn.ListChainsOfTableFamily(t.family)
		if err != nil && !notFound(err) {
			return nil, fmt.Errorf("list the table's chains: %w", err)
		}
		for _, c := range chains {
			if c.Table.Name == t.name {
				names = append(names, c.Name)
			}
		}
	case "set", "map":
		if err := t.readSets(); err != nil {
			return nil, err
		}
		wantMap := strings.HasPrefix(objectType, "map")
		for name, s := range t.sets {
			if s.Map == wantMap {
				names = append(names, name)
			}
		}
		slices.Sort(names)
	default:
		return nil, fmt.Errorf("listing %q is not supported", objectType)
	}
	return names, nil
}

// readSets learns the table's sets from the kernel once: their types are
// needed to encode elements a batch adds without declaring the set.
func (t *Table) readSets() error {
	if t.read {
		return nil
	}
	sets, err := t.conn.GetSets(t.table())
	if err != nil && !notFound(err) {
		return fmt.Errorf("list the table's sets: %w", err)
	}
	for _, s := range sets {
		if s.Anonymous {
			continue
		}
		key, err := typeFromKernel(s.KeyType, int(s.KeyType.Bytes))
		if err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		info := SetInfo{Key: key, Interval: s.Interval, Map: s.IsMap}
		if s.IsMap {
			if info.Data, err = typeFromKernel(s.DataType, int(s.DataType.Bytes)); err != nil {
				return fmt.Errorf("map %s: %w", s.Name, err)
			}
		}
		t.sets[s.Name] = info
	}
	t.read = true
	return nil
}

// notFound: the table does not exist (the library does not always wrap
// the errno).
func notFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), unix.ENOENT.Error())
}

// typeFromKernel unfolds a set's type number into the field types.
func typeFromKernel(d nftables.SetDatatype, size int) (typ, error) {
	m := d.GetNFTMagic()
	if m == tVerdict.magic || d.Name == nftables.TypeVerdict.Name {
		return typ{tVerdict}, nil
	}
	var t typ
	for m != 0 {
		f, ok := byMagic(m & nftables.SetConcatTypeMask)
		if !ok {
			return nil, fmt.Errorf("type number %d is not supported", m&nftables.SetConcatTypeMask)
		}
		t = append(typ{f}, t...)
		m >>= nftables.SetConcatTypeBits
	}
	if t.size() != size && !(len(t) == 1 && size == 0) {
		return nil, fmt.Errorf("type %s is %d bytes, the kernel says %d", t, t.size(), size)
	}
	return t, nil
}

func byMagic(m uint32) (dtype, bool) {
	for _, d := range byName {
		if d.magic == m {
			return d, true
		}
	}
	return dtype{}, false
}

// NewBatch starts an empty batch.
func (t *Table) NewBatch() dataplane.Batch { return &Batch{t: t} }

type verb int

const (
	add verb = iota
	del
	flush
)

type op struct {
	verb verb
	obj  knftables.Object
}

// Batch collects one transaction's operations; Run compiles and sends them.
type Batch struct {
	t   *Table
	ops []op
}

func (b *Batch) Add(o knftables.Object)    { b.ops = append(b.ops, op{add, o}) }
func (b *Batch) Delete(o knftables.Object) { b.ops = append(b.ops, op{del, o}) }
func (b *Batch) Flush(o knftables.Object)  { b.ops = append(b.ops, op{flush, o}) }

// Len is the number of operations.
func (b *Batch) Len() int { return len(b.ops) }

// Run compiles the operations into netlink messages and sends them as one
// transaction. Nothing is sent when any operation cannot be compiled.
func (b *Batch) Run(_ context.Context) error {
	t := b.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.readSets(); err != nil {
		return err
	}
	// First compile everything, queueing nothing: an operation that cannot
	// be compiled leaves the connection untouched.
	w := &writer{t: t, table: t.table(), sets: map[string]SetInfo{}, deleted: map[string]bool{}}
	for i, o := range b.ops {
		if err := w.op(o); err != nil {
			return fmt.Errorf("operation %d of %d: %w", i+1, len(b.ops), err)
		}
	}
	w.flushElements()
	for _, a := range w.actions {
		if err := a(); err != nil {
			t.reset()
			return fmt.Errorf("nftables netlink message: %w", err)
		}
	}
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("nftables netlink transaction (%d operations): %w", len(b.ops), err)
	}
	for name := range w.deleted {
		delete(t.sets, name)
	}
	for name, s := range w.sets {
		t.sets[name] = s
	}
	return nil
}

// writer turns operations into the connection's queued messages.
type writer struct {
	t       *Table
	table   *nftables.Table
	sets    map[string]SetInfo // declared by this batch
	deleted map[string]bool    // deleted by this batch

	// What to queue on the connection, once everything has compiled.
	actions []func() error

	// Consecutive element operations on one set are sent together.
	pendSet  *nftables.Set
	pendVerb verb
	pend     []nftables.SetElement
}

// reset drops every queued message without sending it: a new connection
// has an empty queue.
func (t *Table) reset() {
	_ = t.conn.CloseLasting()
	if c, err := nftables.New(t.copts...); err == nil {
		t.conn = c
	}
}

func (w *writer) info(name string) (SetInfo, bool) {
	if s, ok := w.sets[name]; ok {
		return s, true
	}
	if w.deleted[name] {
		return SetInfo{}, false
	}
	s, ok := w.t.sets[name]
	return s, ok
}

func (w *writer) op(o op) error {
	if _, ok := o.obj.(*knftables.Element); !ok {
		w.flushElements()
	}
	c := w.t.conn
	do := func(f func()) { w.actions = append(w.actions, func() error { f(); return nil }) }
	switch obj := o.obj.(type) {
	case *knftables.Table:
		switch o.verb {
		case add:
			do(func() { c.AddTable(w.table) })
		case del:
			do(func() { c.DelTable(w.table) })
			for name := range w.t.sets {
				w.deleted[name] = true
			}
			clear(w.sets)
		case flush:
			do(func() { c.FlushTable(w.table) })
		}
	case *knftables.Chain:
		ch := &nftables.Chain{Name: obj.Name, Table: w.table}
		switch o.verb {
		case add:
			if obj.Hook != nil {
				if obj.Type == nil || obj.Priority == nil {
					return fmt.Errorf("base chain %s: type and priority are required", obj.Name)
				}
				hook, ok := hooks[*obj.Hook]
				if !ok {
					return fmt.Errorf("base chain %s: hook %q is not supported", obj.Name, *obj.Hook)
				}
				prio, err := dataplane.PriorityValue(*obj.Priority)
				if err != nil {
					return fmt.Errorf("base chain %s: priority %q: %w", obj.Name, *obj.Priority, err)
				}
				p := nftables.ChainPriority(prio)
				ch.Hooknum, ch.Priority, ch.Type = hook, &p, nftables.ChainType(*obj.Type)
			}
			do(func() { c.AddChain(ch) })
		case del:
			do(func() { c.DelChain(ch) })
		case flush:
			do(func() { c.FlushChain(ch) })
		}
	case *knftables.Rule:
		if o.verb != add || obj.Index != nil || obj.Handle != nil {
			return fmt.Errorf("rule %q: only appending rules is supported", obj.Rule)
		}
		exprs, anon, err := compileRule(w.table, obj.Rule, w.info)
		if err != nil {
			return fmt.Errorf("chain %s: %w", obj.Chain, err)
		}
		for _, a := range anon {
			w.actions = append(w.actions, func() error { return c.AddSet(a.set, a.elems) })
		}
		r := &nftables.Rule{Table: w.table, Chain: &nftables.Chain{Name: obj.Chain, Table: w.table}, Exprs: exprs}
		if obj.Comment != nil {
			r.UserData = userdata.AppendString(nil, userdata.TypeComment, *obj.Comment)
		}
		do(func() { c.AddRule(r) })
	case *knftables.Set:
		return w.set(o.verb, obj.Name, false, obj.Type, obj.TypeOf, obj.Flags, obj.Timeout, obj.Comment)
	case *knftables.Map:
		return w.set(o.verb, obj.Name, true, obj.Type, obj.TypeOf, obj.Flags, obj.Timeout, obj.Comment)
	case *knftables.Element:
		return w.element(o.verb, obj)
	default:
		return fmt.Errorf("%T objects are not supported", o.obj)
	}
	return nil
}

var hooks = map[knftables.BaseChainHook]*nftables.ChainHook{
	knftables.PreroutingHook:  nftables.ChainHookPrerouting,
	knftables.InputHook:       nftables.ChainHookInput,
	knftables.ForwardHook:     nftables.ChainHookForward,
	knftables.OutputHook:      nftables.ChainHookOutput,
	knftables.PostroutingHook: nftables.ChainHookPostrouting,
}

func (w *writer) set(v verb, name string, isMap bool, typeDecl, typeOf string, flags []knftables.SetFlag, timeout *time.Duration, comment *string) error {
	c := w.t.conn
	ns := &nftables.Set{Table: w.table, Name: name}
	switch v {
	case del:
		w.actions = append(w.actions, func() error { c.DelSet(ns); return nil })
		w.deleted[name] = true
		delete(w.sets, name)
		return nil
	case flush:
		w.actions = append(w.actions, func() error { c.FlushSet(ns); return nil })
		return nil
	}
	info, err := declared(isMap, typeDecl, typeOf)
	if err != nil {
		return fmt.Errorf("set %s: %w", name, err)
	}
	for _, f := range flags {
		switch f {
		case knftables.IntervalFlag:
			info.Interval, ns.Interval = true, true
		case knftables.TimeoutFlag:
			ns.HasTimeout = true
		case knftables.DynamicFlag:
			ns.Dynamic = true
		case knftables.ConstantFlag:
			ns.Constant = true
		default:
			return fmt.Errorf("set %s: flag %q is not supported", name, f)
		}
	}
	if timeout != nil {
		ns.Timeout = *timeout
	}
	if comment != nil {
		ns.Comment = *comment
	}
	ns.IsMap = isMap
	ns.KeyType = info.Key.datatype()
	ns.Concatenation = info.Interval && len(info.Key) > 1
	if isMap {
		ns.DataType = info.Data.datatype()
	}
	w.actions = append(w.actions, func() error { return c.AddSet(ns, nil) })
	if old, ok := w.info(name); ok && (old.Key.String() != info.Key.String() || old.Data.String() != info.Data.String()) {
		return fmt.Errorf("set %s exists with type %s, not %s", name, old.Key, info.Key)
	}
	w.sets[name] = info
	delete(w.deleted, name)
	return nil
}

// declared reads a set's type declaration ("type K" / "typeof E", maps
// "K : V").
func declared(isMap bool, typeDecl, typeOf string) (SetInfo, error) {
	info := SetInfo{Map: isMap}
	decl, parse := typeDecl, parseType
	if typeOf != "" {
		decl, parse = typeOf, parseTypeOf
	}
	k, v, hasData := strings.Cut(decl, " : ")
	if hasData != isMap {
		return info, fmt.Errorf("type %q: a map needs \"key : value\", a set only a key", decl)
	}
	var err error
	if info.Key, err = parse(k); err != nil {
		return info, err
	}
	if isMap {
		if strings.TrimSpace(v) == "verdict" {
			info.Data = typ{tVerdict}
		} else if info.Data, err = parse(v); err != nil {
			return info, err
		}
	}
	return info, nil
}

func (w *writer) element(v verb, e *knftables.Element) error {
	name := e.Set
	if e.Map != "" {
		name = e.Map
	}
	info, ok := w.info(name)
	if !ok {
		return fmt.Errorf("element %s of %s: the set is not known", strings.Join(e.Key, " . "), name)
	}
	els, err := encodeElement(info, e, v == del)
	if err != nil {
		return fmt.Errorf("element %s of %s: %w", strings.Join(e.Key, " . "), name, err)
	}
	if w.pendSet == nil || w.pendSet.Name != name || w.pendVerb != v {
		w.flushElements()
		w.pendSet = &nftables.Set{Table: w.table, Name: name, IsMap: info.Map, Interval: info.Interval}
		if info.Map && len(info.Data) == 1 && info.Data[0].magic == tVerdict.magic {
			w.pendSet.DataType = nftables.TypeVerdict
		}
		w.pendVerb = v
	}
	w.pend = append(w.pend, els...)
	if len(w.pend) >= elementsPerMessage {
		w.flushElements()
	}
	return nil
}

// encodeElement is the kernel's form of e: key (and the end of a range
// over a concatenation), value or verdict, comment. An interval set
// without concatenation holds a range as two elements, its first value and
// the value after its last flagged as an end.
func encodeElement(info SetInfo, e *knftables.Element, deleting bool) ([]nftables.SetElement, error) {
	key, keyEnd, err := info.Key.encode(e.Key, info.Interval)
	if err != nil {
		return nil, err
	}
	el := nftables.SetElement{Key: key}
	if e.Comment != nil && !deleting {
		el.Comment = *e.Comment
	}
	if info.Map && !deleting {
		if len(e.Value) == 0 {
			return nil, fmt.Errorf("a map element needs a value")
		}
		if info.Data[0].magic == tVerdict.magic {
			if el.VerdictData, err = parseVerdict(strings.Join(e.Value, " ")); err != nil {
				return nil, err
			}
		} else if el.Val, _, err = info.Data.encode(e.Value, false); err != nil {
			return nil, err
		}
	}
	if !info.Interval {
		return []nftables.SetElement{el}, nil
	}
	if len(info.Key) > 1 {
		el.KeyEnd = keyEnd
		return []nftables.SetElement{el}, nil
	}
	out := []nftables.SetElement{el}
	if end, ok := increment(keyEnd); ok {
		out = append(out, nftables.SetElement{Key: end, IntervalEnd: true})
	}
	return out, nil
}

// increment adds one to a big-endian value; false when it overflows (the
// range runs to the top, and needs no end element).
func increment(b []byte) ([]byte, bool) {
	out := slices.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out, true
		}
	}
	return nil, false
}

// flushElements turns the pending elements into one message.
func (w *writer) flushElements() {
	if len(w.pend) == 0 {
		return
	}
	set, els, c := w.pendSet, w.pend, w.t.conn
	if w.pendVerb == add {
		w.actions = append(w.actions, func() error { return c.SetAddElements(set, els) })
	} else {
		w.actions = append(w.actions, func() error { return c.SetDeleteElements(set, els) })
	}
	w.pend = nil
}
