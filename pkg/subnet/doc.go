// Package subnet carves host subnets out of a ClusterNetwork's cluster networks. It is a
// deterministic core without I/O: the controller gives it the ClusterNetwork's entries and
// the subnets that HostSubnets already hold, and it answers with the next free host subnet
// (lowest address first, across the entries in their order), the capacity and the use.
//
// It also validates the address part of a ClusterNetwork spec (the CIDRs, the host subnet
// lengths, overlaps between entries and with the service network) with errors that name the
// field and the value, as the CRD's CEL rules do for the API server. Its per-field checks
// (ParseCIDR, CheckFamily, CheckHostSubnetLength) are pkg/plan's too, so that a plan and a
// ClusterNetwork are held to the same rules.
package subnet
