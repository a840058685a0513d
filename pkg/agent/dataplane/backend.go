package dataplane

import (
	"context"

	"sigs.k8s.io/knftables"
)

// Tx is what a feature writes its contribution into. Both backends' batches
// are one: knftables' transaction (text for the nft binary) and the netlink
// batch (pkg/agent/nftnl).
type Tx interface {
	Add(knftables.Object)
	Delete(knftables.Object)
	Flush(knftables.Object)
}

// Backend programs the table. The agent programs it over netlink
// (pkg/agent/nftnl); FromKnftables adapts knftables' exec'ing interface
// and its fake (unit tests, and the nft-binary mode kept for comparison).
type Backend interface {
	// NewBatch starts an empty batch.
	NewBatch() Batch
	// List names the table's objects of one type ("chains", "sets",
	// "maps"); a table that does not exist yet yields a knftables
	// not-found error or none.
	List(ctx context.Context, objectType string) ([]string, error)
}

// Batch is a Tx that runs as one kernel transaction: everything or nothing.
type Batch interface {
	Tx
	// Len is the number of operations added.
	Len() int
	// Run commits the batch.
	Run(ctx context.Context) error
}

// FromKnftables adapts a knftables interface (nft binary or fake).
func FromKnftables(nft knftables.Interface) Backend { return knftBackend{nft} }

type knftBackend struct{ nft knftables.Interface }

func (k knftBackend) NewBatch() Batch { return &knftBatch{k.nft.NewTransaction(), k.nft} }

func (k knftBackend) List(ctx context.Context, objectType string) ([]string, error) {
	return k.nft.List(ctx, objectType)
}

type knftBatch struct {
	*knftables.Transaction
	nft knftables.Interface
}

func (b *knftBatch) Len() int                      { return b.NumOperations() }
func (b *knftBatch) Run(ctx context.Context) error { return b.nft.Run(ctx, b.Transaction) }
