package labrun

import "testing"

func TestCountIsolation(t *testing.T) {
	out := `{"nftables":[{"metainfo":{}},{"table":{"name":"sluice"}},
{"chain":{"name":"np-ingress"}},{"chain":{"name":"forward"}},{"chain":{"name":"tenant-7"}},
{"rule":{"chain":"np-ingress","expr":[]}},{"rule":{"chain":"forward"}},
{"map":{"name":"np-ingress-pods","elem":[1,2,3]}},{"set":{"name":"pod-ifaddrs","elem":[1]}},{"set":{"name":"np-peer-x","elem":[1,2]}}]}`
	c, err := countIsolation([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if c != (TableCount{Chains: 2, Rules: 1, Elements: 5}) {
		t.Errorf("count = %+v", c)
	}
}
