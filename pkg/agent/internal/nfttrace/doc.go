// Package nfttrace is test support: packet tracers that walk the first
// packet of a new connection through a rendered knftables.Fake of the
// table `inet sluice`, as the kernel would. Services follows the service
// proxy's part (filter before DNAT, nat dstnat, filter after DNAT, nat
// srcnat); Isolation walks isolation's filter base chains of one hook in
// priority order. Each reads exactly the rule shapes Sluice renders and
// fails the test on anything else, so a rule it cannot read is a rule
// nobody checked. Each reads only its own feature's chains, so both can run
// on a table that also holds the pod network's and the other's part.
//
// It imports neither pkg/agent/proxy nor pkg/agent/netpol, whose internal
// tests use it (that would be an import cycle): the chain and set names it
// needs are its own constants, and each of those packages has a test that
// they equal its own.
package nfttrace
