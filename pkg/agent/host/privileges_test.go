package node

import (
	"strings"
	"testing"
)

func TestPrivilegesMissing(t *testing.T) {
	const netAdmin, sysAdmin = 1 << 12, 1 << 21
	cases := []struct {
		name string
		p    Privileges
		want []string // substrings, one per missing item, in order
	}{
		{"privileged container", Privileges{CapEff: 0x1ffffffffff, Forwarding: "1", ForwardingWritable: true}, nil},
		{"the two capabilities, forwarding already on, /proc/sys read-only", Privileges{CapEff: netAdmin | sysAdmin, Forwarding: "1"}, nil},
		{"forwarding off but writable", Privileges{CapEff: netAdmin | sysAdmin, Forwarding: "0", ForwardingWritable: true}, nil},
		{"no NET_ADMIN", Privileges{CapEff: sysAdmin, Forwarding: "1"}, []string{"CAP_NET_ADMIN"}},
		{"no capabilities, forwarding off and read-only", Privileges{Forwarding: "0"},
			[]string{"CAP_NET_ADMIN", "CAP_SYS_ADMIN", `net.ipv4.ip_forward is "0"`}},
	}
	for _, c := range cases {
		got := c.p.Missing()
		if len(got) != len(c.want) {
			t.Errorf("%s: Missing() = %q, want %d items %q", c.name, got, len(c.want), c.want)
			continue
		}
		for i := range got {
			if !strings.Contains(got[i], c.want[i]) {
				t.Errorf("%s: item %d = %q, want it to name %q", c.name, i, got[i], c.want[i])
			}
		}
	}
}

func TestReadPrivileges(t *testing.T) {
	p, err := ReadPrivileges()
	if err != nil {
		t.Fatal(err)
	}
	if p.Forwarding != "0" && p.Forwarding != "1" {
		t.Errorf("Forwarding = %q, want 0 or 1", p.Forwarding)
	}
}
