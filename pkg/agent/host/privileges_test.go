package host

import (
	"github.com/go-logr/logr"
	"github.com/sluice-net/sluice/pkg/health"
	"net/http/httptest"
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

func TestCheckPrivilegesReportsWhatIsMissing(t *testing.T) {
	h := &health.Server{}
	ok := CheckPrivileges(func() (Privileges, error) { return Privileges{Forwarding: "1"}, nil }, Reporter{NodeName: "n1", Log: logr.Discard(), Health: h})
	if ok {
		t.Fatal("no capabilities accepted")
	}
	rec := httptest.NewRecorder()
	h.Ready.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "CAP_NET_ADMIN") {
		t.Errorf("/readyz = %d %q, want 503 naming CAP_NET_ADMIN", rec.Code, rec.Body.String())
	}
	// The control: with both capabilities the same check passes and /readyz is 200.
	h = &health.Server{}
	if !CheckPrivileges(func() (Privileges, error) { return Privileges{CapEff: 1<<12 | 1<<21, Forwarding: "1"}, nil }, Reporter{Log: logr.Discard(), Health: h}) {
		t.Fatal("sufficient privileges refused")
	}
	rec = httptest.NewRecorder()
	h.Ready.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 200 {
		t.Errorf("/readyz = %d with every privilege", rec.Code)
	}
}
