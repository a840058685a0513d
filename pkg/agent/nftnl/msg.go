package nftnl

import (
	"encoding/binary"
	"time"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// This file writes the nf_tables netlink messages of a batch. The
// expressions' own encoding comes from github.com/google/nftables/expr; the
// messages around them are ours, so that every attribute nft writes can be
// written too (chain and table comments, the "typeof" description of a
// map that nft needs to list it).

// Attribute numbers from linux/netfilter/nf_tables.h.
const (
	attrTableName     = 1
	attrTableUserdata = 6

	attrChainTable    = 1
	attrChainName     = 3
	attrChainHook     = 4
	attrChainType     = 7
	attrChainUserdata = 12
	attrHookNum       = 1
	attrHookPriority  = 2

	attrRuleTable       = 1
	attrRuleChain       = 2
	attrRuleExpressions = 4
	attrRuleUserdata    = 7
	attrListElem        = 1

	attrSetTable    = 1
	attrSetName     = 2
	attrSetFlags    = 3
	attrSetKeyType  = 4
	attrSetKeyLen   = 5
	attrSetDataType = 6
	attrSetDataLen  = 7
	attrSetDesc     = 9
	attrSetID       = 10
	attrSetTimeout  = 11
	attrSetUserdata = 13
	attrDescSize    = 1
	attrDescConcat  = 2
	attrFieldLen    = 1

	attrElemListTable    = 1
	attrElemListSet      = 2
	attrElemListElements = 3
	attrElemListSetID    = 4
	attrElemKey          = 1
	attrElemData         = 2
	attrElemFlags        = 3
	attrElemUserdata     = 6
	attrElemKeyEnd       = 10

	attrDataValue    = 1
	attrDataVerdict  = 2
	attrVerdictCode  = 1
	attrVerdictChain = 2

	setConcat = 0x80 // NFT_SET_CONCAT
)

// Userdata TLV types (libnftnl's udata.h): comments of tables, chains,
// rules and elements are type 0; a set's are numbered apart.
const (
	udComment          = 0
	udSetKeyByteorder  = 0
	udSetDataByteorder = 1
	udSetKeyTypeof     = 3
	udSetDataTypeof    = 4
	udSetDataInterval  = 6
	udSetComment       = 7
)

// udata appends one type-length-value to b (lengths are one byte).
func udata(b []byte, typ byte, v []byte) []byte {
	return append(append(b, typ, byte(len(v))), v...)
}

func udString(b []byte, typ byte, s string) []byte { return udata(b, typ, append([]byte(s), 0)) }

func udUint32(b []byte, typ byte, v uint32) []byte {
	return udata(b, typ, binary.NativeEndian.AppendUint32(nil, v))
}

// commentUdata is a comment as tables, chains, rules and elements carry
// it; userdata is at most 255 bytes (nft refuses longer comments).
func commentUdata(c *string) []byte {
	if c == nil || *c == "" {
		return nil
	}
	s := *c
	if len(s) > 128 {
		s = s[:128]
	}
	return udString(nil, udComment, s)
}

// message is one nf_tables request of a batch.
func message(kind uint16, flags netlink.HeaderFlags, ae *netlink.AttributeEncoder) (netlink.Message, error) {
	b, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, err
	}
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | kind), Flags: netlink.Request | flags},
		// nfgenmsg: family, version, resource id.
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, b...),
	}, nil
}

func encoder() *netlink.AttributeEncoder {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	return ae
}

func tableMsg(kind uint16, table string, comment *string) (netlink.Message, error) {
	ae := encoder()
	ae.String(attrTableName, table)
	if u := commentUdata(comment); kind == unix.NFT_MSG_NEWTABLE && u != nil {
		ae.Bytes(attrTableUserdata, u)
	}
	flags := netlink.HeaderFlags(0)
	if kind == unix.NFT_MSG_NEWTABLE {
		flags = netlink.Create
	}
	return message(kind, flags, ae)
}

// chainSpec is a chain as NEWCHAIN writes it.
type chainSpec struct {
	name     string
	hook     uint32
	priority int32
	typ      string // "" for a regular chain
	comment  *string
}

func chainMsg(kind uint16, table string, c chainSpec) (netlink.Message, error) {
	ae := encoder()
	ae.String(attrChainTable, table)
	ae.String(attrChainName, c.name)
	flags := netlink.HeaderFlags(0)
	if kind == unix.NFT_MSG_NEWCHAIN {
		flags = netlink.Create
		if c.typ != "" {
			ae.Nested(attrChainHook, func(n *netlink.AttributeEncoder) error {
				n.Uint32(attrHookNum, c.hook)
				n.Uint32(attrHookPriority, uint32(c.priority))
				return nil
			})
			ae.String(attrChainType, c.typ)
		}
		if u := commentUdata(c.comment); u != nil {
			ae.Bytes(attrChainUserdata, u)
		}
	}
	return message(kind, flags, ae)
}

// flushChainMsg deletes every rule of chain.
func flushChainMsg(table, chain string) (netlink.Message, error) {
	ae := encoder()
	ae.String(attrRuleTable, table)
	ae.String(attrRuleChain, chain)
	return message(unix.NFT_MSG_DELRULE, 0, ae)
}

func ruleMsg(table, chain string, exprs []expr.Any, comment *string) (netlink.Message, error) {
	ae := encoder()
	ae.String(attrRuleTable, table)
	ae.String(attrRuleChain, chain)
	var list []byte
	for _, e := range exprs {
		b, err := expr.Marshal(unix.NFPROTO_INET, e)
		if err != nil {
			return netlink.Message{}, err
		}
		list = append(list, attr(attrListElem|unix.NLA_F_NESTED, b)...)
	}
	ae.Bytes(attrRuleExpressions|unix.NLA_F_NESTED, list)
	if u := commentUdata(comment); u != nil {
		ae.Bytes(attrRuleUserdata, u)
	}
	return message(unix.NFT_MSG_NEWRULE, netlink.Create|netlink.Append, ae)
}

// attr encodes one attribute (header, value, padding).
func attr(typ uint16, v []byte) []byte {
	n := 4 + len(v)
	b := make([]byte, 4, (n+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// setSpec is a set or map as NEWSET writes it.
type setSpec struct {
	name      string
	id        uint32
	key, data typ
	isMap     bool
	anonymous bool
	constant  bool
	interval  bool
	timeout   bool
	dynamic   bool
	expires   time.Duration
	comment   *string
	typeOf    [2][]typeofExpr // key and data, when declared by "typeof"
	elements  int             // for constant sets: their size
}

func (s *setSpec) flags() uint32 {
	var f uint32
	for _, x := range []struct {
		on   bool
		flag uint32
	}{{s.anonymous, unix.NFT_SET_ANONYMOUS}, {s.constant, unix.NFT_SET_CONSTANT}, {s.interval, unix.NFT_SET_INTERVAL},
		{s.isMap, unix.NFT_SET_MAP}, {s.timeout, unix.NFT_SET_TIMEOUT}, {s.dynamic, unix.NFT_SET_EVAL},
		{s.interval && len(s.key) > 1, setConcat}} {
		if x.on {
			f |= x.flag
		}
	}
	return f
}

func setMsg(table string, s *setSpec) (netlink.Message, error) {
	ae := encoder()
	ae.String(attrSetTable, table)
	ae.String(attrSetName, s.name)
	ae.Uint32(attrSetFlags, s.flags())
	ae.Uint32(attrSetKeyType, s.key.magic())
	ae.Uint32(attrSetKeyLen, uint32(s.key.size()))
	if s.id == 0 { // the kernel requires one; it names the set within the batch
		s.id = anonIDs.Add(1)
	}
	ae.Uint32(attrSetID, s.id)
	if s.isMap {
		if s.data.isVerdict() {
			ae.Uint32(attrSetDataType, unix.NFT_DATA_VERDICT)
			ae.Uint32(attrSetDataLen, 0)
		} else {
			ae.Uint32(attrSetDataType, s.data.magic())
			ae.Uint32(attrSetDataLen, uint32(s.data.size()))
		}
	}
	if s.timeout && s.expires > 0 {
		ae.Uint64(attrSetTimeout, uint64(s.expires.Milliseconds()))
	}
	// Field lengths go only with the concatenation flag (ranges over a
	// concatenation), as nft sends them.
	concat := s.interval && len(s.key) > 1
	if s.constant || concat {
		ae.Nested(attrSetDesc, func(d *netlink.AttributeEncoder) error {
			if s.constant {
				d.Uint32(attrDescSize, uint32(s.elements))
			}
			if concat {
				d.Nested(attrDescConcat, func(c *netlink.AttributeEncoder) error {
					for _, f := range s.key {
						c.Nested(attrListElem, func(e *netlink.AttributeEncoder) error {
							e.Uint32(attrFieldLen, uint32(f.size))
							return nil
						})
					}
					return nil
				})
			}
			return nil
		})
	}
	ae.Bytes(attrSetUserdata, s.udata())
	return message(unix.NFT_MSG_NEWSET, netlink.Create, ae)
}

// udata is what nft writes in a set's userdata: byte orders, the typeof
// description (which nft needs to list a key holding an integer), comment.
func (s *setSpec) udata() []byte {
	var b []byte
	order := func(t typ) uint32 {
		switch {
		case len(t) != 1 || t.isVerdict():
			return 0
		case t[0].host:
			return 1
		}
		return 2
	}
	if s.typeOf[0] != nil {
		b = udUint32(b, udSetKeyByteorder, 0)
		if s.isMap {
			b = udUint32(b, udSetDataByteorder, 0)
		}
		b = udata(b, udSetKeyTypeof, typeofUdata(s.typeOf[0]))
		if s.isMap {
			b = udata(b, udSetDataTypeof, typeofUdata(s.typeOf[1]))
			b = udUint32(b, udSetDataInterval, 0)
		}
	} else {
		b = udUint32(b, udSetKeyByteorder, order(s.key))
		if s.isMap && !s.data.isVerdict() {
			b = udUint32(b, udSetDataByteorder, order(s.data))
		}
	}
	if s.comment != nil && *s.comment != "" {
		b = udString(b, udSetComment, *s.comment)
	}
	return b
}

// typeofExpr describes one expression of a typeof declaration the way nft
// stores it: its expression type and numbered properties.
type typeofExpr struct {
	kind  uint32   // nft's expression type: 7 payload, 23 numgen
	props []uint32 // payload: protocol, field; numgen: type, modulus, offset
}

// nft's numbers for the expressions typeof declarations use here.
const (
	exprPayload = 7
	exprConcat  = 13
	exprNumgen  = 23
)

// payloadIDs: (protocol description, field) of the payload fields a typeof
// declaration may name, as nft numbers them.
var payloadIDs = map[string][2]uint32{
	"ip saddr": {12, 11}, "ip daddr": {12, 12},
	"tcp sport": {8, 1}, "tcp dport": {8, 2},
	"udp sport": {6, 1}, "udp dport": {6, 2},
	"sctp sport": {10, 1}, "sctp dport": {10, 2},
}

func typeofUdata(es []typeofExpr) []byte {
	one := func(e typeofExpr) []byte {
		var props []byte
		for i, p := range e.props {
			props = udUint32(props, byte(i), p)
		}
		return udata(udUint32(nil, 0, e.kind), 1, props)
	}
	if len(es) == 1 {
		return one(es[0])
	}
	var parts []byte
	for i, e := range es {
		parts = udata(parts, byte(i), one(e))
	}
	return udata(udUint32(nil, 0, exprConcat), 1, parts)
}

// element is a set element as NEWSETELEM and DELSETELEM write it.
type element struct {
	key, keyEnd []byte
	end         bool // an interval's end (plain interval sets)
	val         []byte
	verdict     *expr.Verdict
	comment     *string
}

func elementsMsg(kind uint16, table, set string, setID uint32, els []element) (netlink.Message, error) {
	ae := encoder()
	ae.String(attrElemListTable, table)
	ae.String(attrElemListSet, set)
	if setID != 0 {
		ae.Uint32(attrElemListSetID, setID)
	}
	// The list is written by hand: at 30k services a cold sync encodes
	// ~300k elements, and nested encoders allocate for every level.
	var list []byte
	for _, e := range els {
		list = append(list, elementAttr(e, kind == unix.NFT_MSG_NEWSETELEM)...)
	}
	ae.Bytes(attrElemListElements|unix.NLA_F_NESTED, list)
	flags := netlink.HeaderFlags(0)
	if kind == unix.NFT_MSG_NEWSETELEM {
		flags = netlink.Create
	}
	return message(kind, flags, ae)
}

// elementAttr is one NFTA_LIST_ELEM of an element list.
func elementAttr(e element, withComment bool) []byte {
	var b []byte
	if e.end {
		b = append(b, attr(attrElemFlags, binary.BigEndian.AppendUint32(nil, unix.NFT_SET_ELEM_INTERVAL_END))...)
	}
	b = append(b, attr(attrElemKey|unix.NLA_F_NESTED, attr(attrDataValue, e.key))...)
	if e.keyEnd != nil {
		b = append(b, attr(attrElemKeyEnd|unix.NLA_F_NESTED, attr(attrDataValue, e.keyEnd))...)
	}
	switch {
	case e.verdict != nil:
		v := attr(attrVerdictCode, binary.BigEndian.AppendUint32(nil, uint32(int32(e.verdict.Kind))))
		if e.verdict.Chain != "" {
			v = append(v, attr(attrVerdictChain, append([]byte(e.verdict.Chain), 0))...)
		}
		b = append(b, attr(attrElemData|unix.NLA_F_NESTED, attr(attrDataVerdict|unix.NLA_F_NESTED, v))...)
	case e.val != nil:
		b = append(b, attr(attrElemData|unix.NLA_F_NESTED, attr(attrDataValue, e.val))...)
	}
	if u := commentUdata(e.comment); u != nil && withComment {
		b = append(b, attr(attrElemUserdata, u)...)
	}
	return attr(attrListElem|unix.NLA_F_NESTED, b)
}

// flushSetMsg deletes every element of set.
func flushSetMsg(table, set string) (netlink.Message, error) {
	ae := encoder()
	ae.String(attrElemListTable, table)
	ae.String(attrElemListSet, set)
	return message(unix.NFT_MSG_DELSETELEM, 0, ae)
}

func delSetMsg(table, set string) (netlink.Message, error) {
	ae := encoder()
	ae.String(attrSetTable, table)
	ae.String(attrSetName, set)
	return message(unix.NFT_MSG_DELSET, 0, ae)
}
