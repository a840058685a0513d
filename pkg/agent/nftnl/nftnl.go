// Package nftnl programs the agent's nftables table over netlink, without
// the nft binary: a dataplane.Backend whose batches the features fill with
// the same knftables objects they give the nft binary (chains, rules as
// text, sets, elements), compiled here into the kernel's messages and sent
// as one transaction per batch.
//
// Rule text is compiled by compile.go into the expressions nft would send
// for it; set and map elements go straight from their fields to bytes (no
// text for the whole table is ever built); msg.go writes the messages. What
// the compiler does not know is an error naming the rule, and the batch is
// not sent.
package nftnl

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
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
// of messages), and the acknowledgements are read only once the batch is
// sent, so the receive buffer must hold them all.
const socketBuffer = 256 << 20

// Table is one inet table programmed over netlink.
type Table struct {
	name    string
	netnsFD int

	mu   sync.Mutex
	conn *netlink.Conn      // lasting; nil until the first batch, and after an error
	sets map[string]SetInfo // committed sets and maps, for element encoding and lookups
	read bool               // sets has been read from the kernel
}

// Option configures a Table.
type Option func(*Table)

// InNetNS programs the table of the network namespace fd refers to (tests,
// benchmarks); the default is the caller's.
func InNetNS(fd int) Option { return func(t *Table) { t.netnsFD = fd } }

// New returns the inet table name. Nothing is opened until it is used.
func New(name string, opts ...Option) (*Table, error) {
	t := &Table{name: name, sets: map[string]SetInfo{}}
	for _, o := range opts {
		o(t)
	}
	return t, nil
}

// Close closes the socket.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return nil
	}
	err := t.conn.Close()
	t.conn = nil
	return err
}

// dial opens the lasting socket with large buffers.
func (t *Table) dial() (*netlink.Conn, error) {
	if t.conn != nil {
		return t.conn, nil
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: t.netnsFD})
	if err != nil {
		return nil, fmt.Errorf("netlink socket for nftables: %w", err)
	}
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
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
	}); err != nil || serr != nil {
		c.Close()
		return nil, errors.Join(err, serr)
	}
	t.conn = c
	return c, nil
}

// reader is a short-lived library connection for reading the table.
func (t *Table) reader() (*nftables.Conn, error) {
	if t.netnsFD != 0 {
		return nftables.New(nftables.WithNetNSFd(t.netnsFD))
	}
	return nftables.New()
}

func (t *Table) table() *nftables.Table {
	return &nftables.Table{Name: t.name, Family: nftables.TableFamilyINet}
}

// List names the table's chains, sets or maps.
func (t *Table) List(_ context.Context, objectType string) ([]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	switch strings.TrimSuffix(objectType, "s") {
	case "chain":
		r, err := t.reader()
		if err != nil {
			return nil, err
		}
		chains, err := r.ListChainsOfTableFamily(nftables.TableFamilyINet)
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

// notFound: the table does not exist (the library does not always wrap
// the errno).
func notFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), unix.ENOENT.Error())
}

// readSets learns the table's sets from the kernel once: their types are
// needed to encode elements a batch adds without declaring the set. The
// dump is read here, not through the library, which misreads maps' key
// types.
func (t *Table) readSets() error {
	if t.read {
		return nil
	}
	c, err := t.dial()
	if err != nil {
		return err
	}
	ae := encoder()
	ae.String(attrSetTable, t.name)
	req, err := message(unix.NFT_MSG_GETSET, netlink.Dump, ae)
	if err != nil {
		return err
	}
	replies, err := c.Execute(req)
	if err != nil {
		if notFound(err) {
			t.read = true
			return nil
		}
		t.drop()
		return fmt.Errorf("list the table's sets: %w", err)
	}
	for _, r := range replies {
		if len(r.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(r.Data[4:])
		if err != nil {
			return err
		}
		ad.ByteOrder = binary.BigEndian
		var table, name string
		var flags, keyType, keyLen, dataType, dataLen uint32
		for ad.Next() {
			switch ad.Type() {
			case attrSetTable:
				table = ad.String()
			case attrSetName:
				name = ad.String()
			case attrSetFlags:
				flags = ad.Uint32()
			case attrSetKeyType:
				keyType = ad.Uint32()
			case attrSetKeyLen:
				keyLen = ad.Uint32()
			case attrSetDataType:
				dataType = ad.Uint32()
			case attrSetDataLen:
				dataLen = ad.Uint32()
			}
		}
		if err := ad.Err(); err != nil {
			return fmt.Errorf("list the table's sets: %w", err)
		}
		if table != t.name || flags&unix.NFT_SET_ANONYMOUS != 0 {
			continue
		}
		key, err := typeFromKernel(keyType, int(keyLen))
		if err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
		info := SetInfo{Key: key, Interval: flags&unix.NFT_SET_INTERVAL != 0, Map: flags&unix.NFT_SET_MAP != 0}
		if info.Map {
			if dataType == unix.NFT_DATA_VERDICT {
				info.Data = typ{tVerdict}
			} else if info.Data, err = typeFromKernel(dataType, int(dataLen)); err != nil {
				return fmt.Errorf("map %s: %w", name, err)
			}
		}
		t.sets[name] = info
	}
	t.read = true
	return nil
}

// typeFromKernel unfolds a set's type number into the field types.
func typeFromKernel(m uint32, size int) (typ, error) {
	var t typ
	for m != 0 {
		f, ok := byMagic(m & nftables.SetConcatTypeMask)
		if !ok {
			return nil, fmt.Errorf("type number %d is not supported", m&nftables.SetConcatTypeMask)
		}
		t = append(typ{f}, t...)
		m >>= nftables.SetConcatTypeBits
	}
	if t.size() != size {
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

// Batch is one transaction's messages. Each operation is compiled when it
// is added, so a full sync never holds the whole ruleset twice (as the
// features' objects and as messages): the objects are garbage once
// compiled. The first operation that cannot be compiled fails the batch:
// Run returns its error and sends nothing. A batch compiles against the
// table's sets as committed when its operations are added; batches of one
// Table are built and run one at a time (the table owner's sync loop).
type Batch struct {
	t      *Table
	w      *writer
	n      int
	err    error // of operation errAt
	errAt  int
	sealed bool
}

func (b *Batch) Add(o knftables.Object)    { b.add(op{add, o}) }
func (b *Batch) Delete(o knftables.Object) { b.add(op{del, o}) }
func (b *Batch) Flush(o knftables.Object)  { b.add(op{flush, o}) }

func (b *Batch) add(o op) {
	b.n++
	if b.err != nil {
		return
	}
	t := b.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if b.w == nil {
		if err := t.readSets(); err != nil {
			b.err, b.errAt = err, -1
			return
		}
		b.w = &writer{t: t, sets: map[string]SetInfo{}, deleted: map[string]bool{}}
	}
	if err := b.w.op(o); err != nil {
		b.err, b.errAt = err, b.n
	}
}

// Len is the number of operations.
func (b *Batch) Len() int { return b.n }

// Run sends the compiled operations as one transaction. Nothing is sent
// when any operation could not be compiled.
func (b *Batch) Run(_ context.Context) error {
	t := b.t
	if b.sealed {
		return errors.New("nftables netlink batch already run")
	}
	b.sealed = true
	if b.err != nil {
		if b.errAt < 0 {
			return b.err
		}
		return fmt.Errorf("operation %d of %d: %w", b.errAt, b.n, b.err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	w := b.w
	if w == nil {
		return nil
	}
	b.w = nil
	if err := w.flushElements(); err != nil {
		return err
	}
	if err := t.send(w.msgs); err != nil {
		return fmt.Errorf("nftables netlink transaction (%d operations): %w", b.n, err)
	}
	for name := range w.deleted {
		delete(t.sets, name)
	}
	for name, s := range w.sets {
		t.sets[name] = s
	}
	return nil
}

// send runs msgs as one batch. Only the last message asks for an
// acknowledgement: the kernel reports every failing message anyway, in
// order, and refuses the whole batch if any one fails; so the batch has
// succeeded exactly when the last message's acknowledgement comes with no
// error before it.
func (t *Table) send(msgs []netlink.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	c, err := t.dial()
	if err != nil {
		return err
	}
	msgs[len(msgs)-1].Header.Flags |= netlink.Acknowledge
	batch := make([]netlink.Message, 0, len(msgs)+2)
	batch = append(batch, batchMsg(unix.NFNL_MSG_BATCH_BEGIN))
	batch = append(batch, msgs...)
	batch = append(batch, batchMsg(unix.NFNL_MSG_BATCH_END))
	sent, err := c.SendMessages(batch)
	if err != nil {
		t.drop()
		return fmt.Errorf("send: %w", err)
	}
	last := sent[len(sent)-2].Header.Sequence
	for {
		replies, err := c.Receive()
		if err != nil {
			// A refused batch (or a broken socket): the answers still
			// unread go with the socket.
			t.drop()
			var oe *netlink.OpError
			if errors.As(err, &oe) {
				return oe
			}
			return fmt.Errorf("receive: %w", err)
		}
		for _, r := range replies {
			if r.Header.Sequence == last {
				return nil
			}
		}
	}
}

// drop closes the socket (its unread answers go with it); the next batch
// opens another.
func (t *Table) drop() {
	if t.conn != nil {
		t.conn.Close()
		t.conn = nil
	}
}

func batchMsg(kind uint16) netlink.Message {
	return netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(kind), Flags: netlink.Request},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}}
}

// writer turns operations into messages.
type writer struct {
	t       *Table
	sets    map[string]SetInfo // declared by this batch
	deleted map[string]bool    // deleted by this batch
	msgs    []netlink.Message

	// Consecutive element operations on one set go in one message.
	pendSet  string
	pendVerb verb
	pend     []element
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

func (w *writer) emit(m netlink.Message, err error) error {
	if err != nil {
		return err
	}
	w.msgs = append(w.msgs, m)
	return nil
}

func (w *writer) op(o op) error {
	if _, ok := o.obj.(*knftables.Element); !ok {
		if err := w.flushElements(); err != nil {
			return err
		}
	}
	table := w.t.name
	switch obj := o.obj.(type) {
	case *knftables.Table:
		switch o.verb {
		case add:
			return w.emit(tableMsg(unix.NFT_MSG_NEWTABLE, table, obj.Comment))
		case del:
			for name := range w.t.sets {
				w.deleted[name] = true
			}
			clear(w.sets)
			return w.emit(tableMsg(unix.NFT_MSG_DELTABLE, table, nil))
		default:
			return fmt.Errorf("flushing the table is not supported")
		}
	case *knftables.Chain:
		spec := chainSpec{name: obj.Name, comment: obj.Comment}
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
				spec.hook, spec.priority, spec.typ = hook, int32(prio), string(*obj.Type)
			}
			return w.emit(chainMsg(unix.NFT_MSG_NEWCHAIN, table, spec))
		case del:
			return w.emit(chainMsg(unix.NFT_MSG_DELCHAIN, table, spec))
		default:
			return w.emit(flushChainMsg(table, obj.Name))
		}
	case *knftables.Rule:
		if o.verb != add || obj.Index != nil || obj.Handle != nil {
			return fmt.Errorf("rule %q: only appending rules is supported", obj.Rule)
		}
		exprs, anon, err := compileRule(obj.Rule, w.info)
		if err != nil {
			return fmt.Errorf("chain %s: %w", obj.Chain, err)
		}
		for _, a := range anon {
			if err := w.emit(setMsg(table, a.set)); err != nil {
				return err
			}
			if err := w.emit(elementsMsg(unix.NFT_MSG_NEWSETELEM, table, a.set.name, a.set.id, a.elems)); err != nil {
				return err
			}
		}
		return w.emit(ruleMsg(table, obj.Chain, exprs, obj.Comment))
	case *knftables.Set:
		return w.set(o.verb, obj.Name, false, obj.Type, obj.TypeOf, obj.Flags, obj.Timeout, obj.Comment)
	case *knftables.Map:
		return w.set(o.verb, obj.Name, true, obj.Type, obj.TypeOf, obj.Flags, obj.Timeout, obj.Comment)
	case *knftables.Element:
		return w.element(o.verb, obj)
	}
	return fmt.Errorf("%T objects are not supported", o.obj)
}

var hooks = map[knftables.BaseChainHook]uint32{
	knftables.PreroutingHook:  unix.NF_INET_PRE_ROUTING,
	knftables.InputHook:       unix.NF_INET_LOCAL_IN,
	knftables.ForwardHook:     unix.NF_INET_FORWARD,
	knftables.OutputHook:      unix.NF_INET_LOCAL_OUT,
	knftables.PostroutingHook: unix.NF_INET_POST_ROUTING,
}

func (w *writer) set(v verb, name string, isMap bool, typeDecl, typeOf string, flags []knftables.SetFlag, timeout *time.Duration, comment *string) error {
	table := w.t.name
	switch v {
	case del:
		w.deleted[name] = true
		delete(w.sets, name)
		return w.emit(delSetMsg(table, name))
	case flush:
		return w.emit(flushSetMsg(table, name))
	}
	info, typeOfs, err := declared(isMap, typeDecl, typeOf)
	if err != nil {
		return fmt.Errorf("set %s: %w", name, err)
	}
	spec := &setSpec{name: name, key: info.Key, data: info.Data, isMap: isMap, comment: comment, typeOf: typeOfs}
	for _, f := range flags {
		switch f {
		case knftables.IntervalFlag:
			info.Interval, spec.interval = true, true
		case knftables.TimeoutFlag:
			spec.timeout = true
		case knftables.DynamicFlag:
			spec.dynamic = true
		case knftables.ConstantFlag:
			spec.constant = true
		default:
			return fmt.Errorf("set %s: flag %q is not supported", name, f)
		}
	}
	if timeout != nil {
		spec.expires = *timeout
	}
	if old, ok := w.info(name); ok && (old.Key.String() != info.Key.String() || old.Data.String() != info.Data.String()) {
		return fmt.Errorf("set %s exists with type %s, not %s", name, old.Key, info.Key)
	}
	w.sets[name] = info
	delete(w.deleted, name)
	return w.emit(setMsg(table, spec))
}

// declared reads a set's type declaration ("type K" / "typeof E", maps
// "K : V"); for typeof, also the expressions' description (key, data).
func declared(isMap bool, typeDecl, typeOf string) (SetInfo, [2][]typeofExpr, error) {
	info := SetInfo{Map: isMap}
	var typeOfs [2][]typeofExpr
	decl, parse := typeDecl, func(s string) (typ, []typeofExpr, error) { t, err := parseType(s); return t, nil, err }
	if typeOf != "" {
		decl, parse = typeOf, parseTypeOf
	}
	k, v, hasData := strings.Cut(decl, " : ")
	if hasData != isMap {
		return info, typeOfs, fmt.Errorf("type %q: a map needs \"key : value\", a set only a key", decl)
	}
	var err error
	if info.Key, typeOfs[0], err = parse(k); err != nil {
		return info, typeOfs, err
	}
	if isMap {
		if strings.TrimSpace(v) == "verdict" {
			info.Data = typ{tVerdict}
		} else if info.Data, typeOfs[1], err = parse(v); err != nil {
			return info, typeOfs, err
		}
	}
	return info, typeOfs, nil
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
	if w.pendSet != name || w.pendVerb != v {
		if err := w.flushElements(); err != nil {
			return err
		}
		w.pendSet, w.pendVerb = name, v
	}
	w.pend = append(w.pend, els...)
	if len(w.pend) >= elementsPerMessage {
		return w.flushElements()
	}
	return nil
}

// encodeElement is the kernel's form of e: key (and the end of a range
// over a concatenation), value or verdict, comment. An interval set
// without concatenation holds a range as two elements, its first value and
// the value after its last flagged as an end.
func encodeElement(info SetInfo, e *knftables.Element, deleting bool) ([]element, error) {
	key, keyEnd, err := info.Key.encode(e.Key, info.Interval)
	if err != nil {
		return nil, err
	}
	el := element{key: key}
	if !deleting {
		el.comment = e.Comment
	}
	if info.Map && !deleting {
		if len(e.Value) == 0 {
			return nil, fmt.Errorf("a map element needs a value")
		}
		if info.Data.isVerdict() {
			if el.verdict, err = parseVerdict(strings.Join(e.Value, " ")); err != nil {
				return nil, err
			}
		} else if el.val, _, err = info.Data.encode(e.Value, false); err != nil {
			return nil, err
		}
	}
	if !info.Interval {
		return []element{el}, nil
	}
	if len(info.Key) > 1 {
		el.keyEnd = keyEnd
		return []element{el}, nil
	}
	out := []element{el}
	if end, ok := increment(keyEnd); ok {
		out = append(out, element{key: end, end: true})
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
func (w *writer) flushElements() error {
	if len(w.pend) == 0 {
		return nil
	}
	kind := uint16(unix.NFT_MSG_NEWSETELEM)
	if w.pendVerb == del {
		kind = unix.NFT_MSG_DELSETELEM
	}
	err := w.emit(elementsMsg(kind, w.t.name, w.pendSet, 0, w.pend))
	w.pend = nil
	return err
}
