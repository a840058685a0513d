package deploy

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	sluicev1alpha1 "github.com/sluice-net/sluice/pkg/apis/sluice/v1alpha1"
)

// crd is one parsed CRD and the validators the API server would build from it.
type crd struct {
	v1         *apiextensionsv1.CustomResourceDefinition
	internal   *apiextensions.CustomResourceDefinition
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

func loadCRD(t *testing.T, file string) *crd {
	t.Helper()
	data, ok := CRDs()[file]
	if !ok {
		t.Fatalf("no CRD file %s in %v", file, CRDFiles())
	}
	c := &crd{v1: &apiextensionsv1.CustomResourceDefinition{}, internal: &apiextensions.CustomResourceDefinition{}}
	if err := yaml.UnmarshalStrict(data, c.v1); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(c.v1)
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(c.v1, c.internal, nil); err != nil {
		t.Fatalf("%s: convert: %v", file, err)
	}
	props := c.internal.Spec.Validation.OpenAPIV3Schema
	var err error
	if c.structural, err = structuralschema.NewStructural(props); err != nil {
		t.Fatalf("%s: structural schema: %v", file, err)
	}
	if c.schema, _, err = apiservervalidation.NewSchemaValidator(props); err != nil {
		t.Fatalf("%s: schema validator: %v", file, err)
	}
	c.cel = cel.NewValidator(c.structural, true, celconfig.PerCallLimit)
	return c
}

// validate defaults and validates obj (YAML) as the API server does on create, or on update
// when old is not empty, and returns the errors as the API server prints them.
func (c *crd) validate(t *testing.T, obj, old string) (map[string]any, []string) {
	t.Helper()
	parse := func(s string) map[string]any {
		// As the API server decodes: JSON numbers become int64, not float64.
		j, err := yaml.YAMLToJSON([]byte(s))
		if err != nil {
			t.Fatalf("bad test object: %v", err)
		}
		var m map[string]any
		if err := utiljson.Unmarshal(j, &m); err != nil {
			t.Fatalf("bad test object: %v", err)
		}
		structuraldefaulting.Default(m, c.structural)
		return m
	}
	o := parse(obj)
	var errs field.ErrorList
	var oldObj any
	if old != "" {
		oo := parse(old)
		oldObj = oo
		errs = apiservervalidation.ValidateCustomResourceUpdate(nil, o, oo, c.schema)
	} else {
		errs = apiservervalidation.ValidateCustomResource(nil, o, c.schema)
	}
	celErrs, _ := c.cel.Validate(context.Background(), nil, c.structural, o, oldObj, celconfig.RuntimeCELCostBudget)
	errs = append(errs, celErrs...)
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return o, out
}

func TestCRDsAreValid(t *testing.T) {
	files := CRDFiles()
	if want := []string{"sluice.dev_clusternetworks.yaml", "sluice.dev_hostsubnets.yaml", "sluice.dev_netnamespaces.yaml"}; !slices.Equal(files, want) {
		t.Fatalf("CRD files = %v, want %v", files, want)
	}
	for _, f := range files {
		c := loadCRD(t, f)
		// The checks the API server makes on a CRD, CEL compilation and cost estimates included.
		if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), c.internal); len(errs) > 0 {
			t.Errorf("%s: %v", f, errs.ToAggregate())
		}
		if c.v1.Spec.Group != sluicev1alpha1.GroupName || c.v1.Spec.Scope != apiextensionsv1.ClusterScoped ||
			len(c.v1.Spec.Versions) != 1 || c.v1.Spec.Versions[0].Name != sluicev1alpha1.SchemeGroupVersion.Version {
			t.Errorf("%s: group %s scope %s versions %v", f, c.v1.Spec.Group, c.v1.Spec.Scope, c.v1.Spec.Versions)
		}
		if len(c.v1.Spec.Versions[0].AdditionalPrinterColumns) == 0 {
			t.Errorf("%s: no printer columns", f)
		}
	}
	if s := loadCRD(t, "sluice.dev_clusternetworks.yaml").v1.Spec.Versions[0].Subresources; s == nil || s.Status == nil {
		t.Errorf("ClusterNetwork has no status subresource")
	}
}

// TestSchemasMatchTypes checks that every JSON field of the Go types is in the CRD's schema
// and the other way round, so that the two cannot drift apart silently.
func TestSchemasMatchTypes(t *testing.T) {
	for file, typ := range map[string]reflect.Type{
		"sluice.dev_clusternetworks.yaml": reflect.TypeFor[sluicev1alpha1.ClusterNetwork](),
		"sluice.dev_hostsubnets.yaml":     reflect.TypeFor[sluicev1alpha1.HostSubnet](),
		"sluice.dev_netnamespaces.yaml":   reflect.TypeFor[sluicev1alpha1.NetNamespace](),
	} {
		c := loadCRD(t, file)
		compare(t, file, "", typ, c.v1.Spec.Versions[0].Schema.OpenAPIV3Schema)
	}
}

func compare(t *testing.T, file, path string, typ reflect.Type, s *apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		if typ.Kind() == reflect.Slice {
			if s.Type != "array" || s.Items == nil || s.Items.Schema == nil {
				t.Errorf("%s: %s: Go slice but schema type %q", file, path, s.Type)
				return
			}
			s = s.Items.Schema
		}
		typ = typ.Elem()
	}
	switch typ.Kind() {
	case reflect.String:
		if s.Type != "string" {
			t.Errorf("%s: %s: Go string but schema type %q", file, path, s.Type)
		}
		return
	case reflect.Int32, reflect.Int64, reflect.Uint32:
		if s.Type != "integer" {
			t.Errorf("%s: %s: Go integer but schema type %q", file, path, s.Type)
		}
		return
	case reflect.Struct:
	default:
		t.Errorf("%s: %s: unexpected Go kind %s", file, path, typ.Kind())
		return
	}
	if typ.PkgPath() == "k8s.io/apimachinery/pkg/apis/meta/v1" && typ.Name() != "Condition" {
		return // ObjectMeta, Time: the API server's business
	}
	if s.Type != "object" {
		t.Errorf("%s: %s: Go struct but schema type %q", file, path, s.Type)
		return
	}
	seen := map[string]bool{}
	for f := range typ.Fields() {
		tag := strings.Split(f.Tag.Get("json"), ",")
		if tag[0] == "" && len(tag) > 1 && tag[1] == "inline" { // TypeMeta
			for g := range f.Type.Fields() {
				name := strings.Split(g.Tag.Get("json"), ",")[0]
				seen[name] = true
				if _, ok := s.Properties[name]; !ok {
					t.Errorf("%s: %s.%s is not in the schema", file, path, name)
				}
			}
			continue
		}
		name := tag[0]
		seen[name] = true
		p, ok := s.Properties[name]
		if !ok {
			t.Errorf("%s: %s.%s is in the Go type but not in the schema", file, path, name)
			continue
		}
		compare(t, file, path+"."+name, f.Type, &p)
	}
	for name := range s.Properties {
		if !seen[name] {
			t.Errorf("%s: %s.%s is in the schema but not in the Go type", file, path, name)
		}
	}
}

const goodClusterNetwork = `
apiVersion: sluice.dev/v1alpha1
kind: ClusterNetwork
metadata: {name: default}
spec:
  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 9}]
  serviceNetwork: 172.30.0.0/16
`

func TestClusterNetworkDefaults(t *testing.T) {
	c := loadCRD(t, "sluice.dev_clusternetworks.yaml")
	obj, errs := c.validate(t, `
apiVersion: sluice.dev/v1alpha1
kind: ClusterNetwork
metadata: {name: default}
spec:
  clusterNetworks: [{cidr: 10.128.0.0/14}]
  serviceNetwork: 172.30.0.0/16
`, "")
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	spec := obj["spec"].(map[string]any)
	for k, want := range map[string]any{"mode": "NetworkPolicy", "encapsulation": "VXLAN", "vxlanPort": int64(4789), "mtu": int64(1500), "serviceProxy": "Sluice"} {
		if got := spec[k]; !reflect.DeepEqual(got, want) {
			t.Errorf("spec.%s defaults to %#v, want %#v", k, got, want)
		}
	}
	if got := spec["clusterNetworks"].([]any)[0].(map[string]any)["hostSubnetLength"]; got != int64(sluicev1alpha1.DefaultHostSubnetLength) {
		t.Errorf("hostSubnetLength defaults to %#v", got)
	}
}

func TestClusterNetworkValidation(t *testing.T) {
	c := loadCRD(t, "sluice.dev_clusternetworks.yaml")
	spec := func(s string) string {
		return "apiVersion: sluice.dev/v1alpha1\nkind: ClusterNetwork\nmetadata: {name: default}\nspec:\n" + s
	}
	for _, tc := range []struct {
		name string
		obj  string
		want []string // substrings, one per expected error; nil = valid
	}{
		{"good", goodClusterNetwork, nil},
		{"good IPv6", spec("  clusterNetworks: [{cidr: 'fd00:10::/48', hostSubnetLength: 64}]\n  serviceNetwork: 'fd00:30::/112'\n"), nil},
		{"good two, every field", spec("  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 9}, {cidr: 10.132.0.0/14, hostSubnetLength: 8}]\n  serviceNetwork: 172.30.0.0/16\n  mode: Multitenant\n  encapsulation: None\n  vxlanPort: 8472\n  mtu: 9000\n  serviceProxy: External\n"), nil},
		{"name", strings.Replace(goodClusterNetwork, "name: default", "name: other", 1),
			[]string{`metadata.name|supported values: "default"`}},
		{"no cluster networks", spec("  clusterNetworks: []\n  serviceNetwork: 172.30.0.0/16\n"),
			[]string{"spec.clusterNetworks|spec.clusterNetworks in body should have at least 1 items"}},
		{"missing fields", spec("  mode: Subnet\n"),
			[]string{`spec.clusterNetworks|Required value`, `spec.serviceNetwork|Required value`}},
		{"bad cidr", spec("  clusterNetworks: [{cidr: 10.128.0.0/33, hostSubnetLength: 9}]\n  serviceNetwork: 172.30.0.0/16\n"),
			[]string{`spec.clusterNetworks[0].cidr|"10.128.0.0/33": cidr is not a valid CIDR; want a network such as 10.128.0.0/14`}},
		{"host bits", spec("  clusterNetworks: [{cidr: 10.128.0.1/14, hostSubnetLength: 9}]\n  serviceNetwork: 172.30.0.0/16\n"),
			[]string{`spec.clusterNetworks[0].cidr|cidr 10.128.0.1/14 has host bits set; the network is 10.128.0.0/14`}},
		{"hostSubnetLength too small", spec("  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 1}]\n  serviceNetwork: 172.30.0.0/16\n"),
			[]string{`spec.clusterNetworks[0].hostSubnetLength|1: hostSubnetLength leaves no pod address: a host subnet needs at least 2 host bits`}},
		{"hostSubnetLength a prefix length", spec("  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 23}]\n  serviceNetwork: 172.30.0.0/16\n"),
			[]string{`spec.clusterNetworks[0].hostSubnetLength|hostSubnetLength 23 leaves no host subnet in 10.128.0.0/14, which has 18 host bits; it must be less than 18 (hostSubnetLength counts the host bits of a node subnet: 9 means /23 in IPv4)`}},
		{"hostSubnetLength one subnet", spec("  clusterNetworks: [{cidr: 10.0.0.0/24, hostSubnetLength: 8}]\n  serviceNetwork: 172.30.0.0/16\n"),
			[]string{`spec.clusterNetworks[0].hostSubnetLength|hostSubnetLength 8 leaves only one host subnet in 10.0.0.0/24, which has 8 host bits`}},
		{"hostSubnetLength IPv6", spec("  clusterNetworks: [{cidr: 'fd00::/64', hostSubnetLength: 64}]\n  serviceNetwork: 'fd00:30::/112'\n"),
			[]string{`spec.clusterNetworks[0].hostSubnetLength|hostSubnetLength 64 leaves only one host subnet in fd00::/64, which has 64 host bits; it must be less than 64`}},
		{"overlap", spec("  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 9}, {cidr: 10.128.0.0/15, hostSubnetLength: 9}]\n  serviceNetwork: 172.30.0.0/16\n"),
			[]string{`spec.clusterNetworks|spec.clusterNetworks[1].cidr 10.128.0.0/15 overlaps spec.clusterNetworks[0].cidr 10.128.0.0/14; cluster networks must not overlap`}},
		{"three overlapping", spec("  clusterNetworks: [{cidr: 10.0.0.0/16, hostSubnetLength: 8}, {cidr: 10.1.0.0/16, hostSubnetLength: 8}, {cidr: 10.0.0.0/8, hostSubnetLength: 8}]\n  serviceNetwork: 172.30.0.0/16\n"),
			[]string{`spec.clusterNetworks|spec.clusterNetworks[2].cidr 10.0.0.0/8 overlaps spec.clusterNetworks[0].cidr 10.0.0.0/16; cluster networks must not overlap`}},
		{"mixed families", spec("  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 9}, {cidr: 'fd00::/48', hostSubnetLength: 64}]\n  serviceNetwork: 172.30.0.0/16\n"),
			[]string{`spec.clusterNetworks|spec.clusterNetworks mixes IPv4 (10.128.0.0/14) and IPv6 (fd00::/48); all cluster networks must be one address family`}},
		{"service overlaps", spec("  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 9}, {cidr: 10.0.0.0/16, hostSubnetLength: 8}]\n  serviceNetwork: 10.130.0.0/16\n"),
			[]string{`spec.serviceNetwork|spec.serviceNetwork 10.130.0.0/16 overlaps spec.clusterNetworks[0].cidr 10.128.0.0/14; the service network must be outside every cluster network`}},
		{"service bad", spec("  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 9}]\n  serviceNetwork: services\n"),
			[]string{`spec.serviceNetwork|"services": serviceNetwork is not a valid CIDR; want a network such as 172.30.0.0/16`}},
		{"enums and ranges", spec("  clusterNetworks: [{cidr: 10.128.0.0/14, hostSubnetLength: 9}]\n  serviceNetwork: 172.30.0.0/16\n  mode: Flat\n  encapsulation: Geneve\n  vxlanPort: 70000\n  mtu: 500\n  serviceProxy: IPVS\n"),
			[]string{`spec.mode|"Flat": supported values: "Subnet", "Multitenant", "NetworkPolicy"`,
				`spec.encapsulation|"Geneve": supported values: "VXLAN", "None"`,
				`spec.vxlanPort|spec.vxlanPort in body should be less than or equal to 65535`,
				`spec.mtu|spec.mtu in body should be greater than or equal to 576`,
				`spec.serviceProxy|"IPVS": supported values: "Sluice", "External"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := c.validate(t, tc.obj, "")
			checkErrors(t, errs, tc.want)
		})
	}
}

// checkErrors wants one error per entry of want, each "PATH|MESSAGE": an error that starts
// with PATH and contains MESSAGE (the API server puts the value between the two).
func checkErrors(t *testing.T, errs, want []string) {
	t.Helper()
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(errs), len(want), strings.Join(errs, "\n"))
	}
	for _, w := range want {
		path, msg, _ := strings.Cut(w, "|")
		if !slices.ContainsFunc(errs, func(e string) bool { return strings.HasPrefix(e, path+": ") && strings.Contains(e, msg) }) {
			t.Errorf("no error at %s contains %q:\n%s", path, msg, strings.Join(errs, "\n"))
		}
	}
}

func TestHostSubnetValidation(t *testing.T) {
	c := loadCRD(t, "sluice.dev_hostsubnets.yaml")
	hs := func(name, host, ip, subnet string) string {
		return "apiVersion: sluice.dev/v1alpha1\nkind: HostSubnet\nmetadata: {name: " + name + "}\nspec: {host: " + host + ", hostIP: '" + ip + "', subnet: '" + subnet + "'}\n"
	}
	good := hs("node1", "node1", "172.28.0.11", "10.128.0.0/23")
	for _, tc := range []struct {
		name, obj, old string
		want           []string
	}{
		{"good", good, "", nil},
		{"good IPv6", hs("node1", "node1", "fd00::11", "fd00:10::/64"), "", nil},
		{"name is host", hs("node2", "node1", "172.28.0.11", "10.128.0.0/23"), "",
			[]string{`spec.host|spec.host "node1" must equal metadata.name "node2": a HostSubnet is named after its node`}},
		{"bad IP", hs("node1", "node1", "172.28.0.300", "10.128.0.0/23"), "",
			[]string{`spec.hostIP|"172.28.0.300": hostIP is not a valid IP address`}},
		{"bad subnet", hs("node1", "node1", "172.28.0.11", "10.128.0.0"), "",
			[]string{`spec.subnet|"10.128.0.0": subnet is not a valid CIDR; want a network such as 10.128.2.0/23`}},
		{"subnet host bits", hs("node1", "node1", "172.28.0.11", "10.128.1.0/23"), "",
			[]string{`spec.subnet|subnet 10.128.1.0/23 has host bits set; the network is 10.128.0.0/23`}},
		{"hostIP may change", hs("node1", "node1", "172.28.0.99", "10.128.0.0/23"), good, nil},
		{"subnet is immutable", hs("node1", "node1", "172.28.0.11", "10.128.2.0/23"), good,
			[]string{`spec.subnet|subnet is immutable`}},
		{"egress", "apiVersion: sluice.dev/v1alpha1\nkind: HostSubnet\nmetadata: {name: node9}\nspec: {host: node9, hostIP: 10.0.0.1, subnet: 10.128.0.0/23, egressIPs: [10.0.0.5, nope], egressCIDRs: [10.0.0.0/24, 10.0.0.0]}\n", "",
			[]string{`spec.egressIPs[1]|"nope": egressIPs holds an address that is not a valid IP address`,
				`spec.egressCIDRs[1]|"10.0.0.0": egressCIDRs holds a network that is not a valid CIDR`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := c.validate(t, tc.obj, tc.old)
			checkErrors(t, errs, tc.want)
		})
	}
}

func TestNetNamespaceValidation(t *testing.T) {
	c := loadCRD(t, "sluice.dev_netnamespaces.yaml")
	nn := func(name, netname, id string) string {
		return "apiVersion: sluice.dev/v1alpha1\nkind: NetNamespace\nmetadata: {name: " + name + "}\nspec: {netname: " + netname + ", netID: " + id + "}\n"
	}
	for _, tc := range []struct {
		name, obj string
		want      []string
	}{
		{"good", nn("web", "web", "4242"), nil},
		{"global", nn("default", "default", "0"), nil},
		{"largest", nn("web", "web", "16777215"), nil},
		{"too large", nn("web", "web", "16777216"), []string{`spec.netID|16777216: netID is not a 24-bit VNID; it must be 0 (global) to 16777215`}},
		{"negative", nn("web", "web", "-1"), []string{`spec.netID|-1: netID is not a 24-bit VNID`}},
		{"name", nn("web", "api", "1"), []string{`spec.netname|spec.netname "api" must equal metadata.name "web": a NetNamespace is named after its namespace`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := c.validate(t, tc.obj, "")
			checkErrors(t, errs, tc.want)
		})
	}
}
