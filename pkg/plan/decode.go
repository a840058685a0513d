package plan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/sluice-net/sluice/pkg/fielderr"
)

// DecodeInput reads one YAML (or JSON) plan document on top of DefaultInput. It is strict:
// an unknown field (matched case-sensitively, unlike encoding/json), a value of the wrong
// type or a duplicate key is an error that names the field and the value. It does not
// validate the values; call Input.Validate or Compute for that.
func DecodeInput(data []byte) (Input, error) {
	in := DefaultInput()
	if err := decodeStrict(data, &in); err != nil {
		return Input{}, err
	}
	return in, nil
}

// decodeStrict decodes data into out, which already holds the defaults.
func decodeStrict(data []byte, out any) error {
	if err := singleDocument(data); err != nil {
		return err
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return fmt.Errorf("not valid YAML: %s", oneLine(err.Error()))
	}
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	var tree any
	if err := d.Decode(&tree); err != nil {
		return fmt.Errorf("not valid YAML: %s", oneLine(err.Error()))
	}
	if tree == nil { // an empty document: every default stands
		return nil
	}
	if errs := checkShape("", tree, reflect.TypeOf(out).Elem()); len(errs) > 0 {
		return errs
	}
	// The tree has the right shape, so decoding cannot meet an unknown field or a type
	// mismatch; DisallowUnknownFields stays as a second line of defence.
	d = json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	if err := d.Decode(out); err != nil {
		return fmt.Errorf("decoding: %w", err)
	}
	return nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// singleDocument rejects a stream of several YAML documents: the YAML library would read
// the first and silently drop the rest.
func singleDocument(data []byte) error {
	docs := 0
	for _, part := range docSeparator.Split(string(data), -1) {
		if hasContent(part) {
			docs++
		}
	}
	if docs > 1 {
		return errors.New("the file holds several YAML documents; a plan is one document")
	}
	return nil
}

func hasContent(s string) bool {
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "..." {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

var (
	entryType = reflect.TypeFor[ClusterNetworkEntry]()
	anyType   = reflect.TypeFor[any]()
)

// checkShape compares a decoded JSON tree with the Go type it is meant for and reports every
// unknown field and every value of the wrong type, each with its path. Keys are visited in
// sorted order so that the report is deterministic.
func checkShape(path string, v any, t reflect.Type) fielderr.List {
	if v == nil { // null or an empty YAML value: keep the default
		return nil
	}
	if t.Kind() == reflect.Pointer {
		return checkShape(path, v, t.Elem())
	}
	if t == entryType {
		if _, ok := v.(string); ok {
			return nil
		}
		if _, ok := v.(map[string]any); !ok {
			return fielderr.List{fielderr.New(path, "%s is neither a CIDR nor {cidr, hostSubnetLength}", showValue(v))}
		}
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return fielderr.List{fielderr.New(path, "%s is not a mapping", showValue(v))}
		}
		fields := jsonFields(t)
		var errs fielderr.List
		for _, k := range slices.Sorted(maps.Keys(m)) {
			p := join(path, k)
			ft, ok := fields[k]
			if !ok {
				errs = append(errs, fielderr.New(p, "unknown field (value %s); known fields: %s",
					showValue(m[k]), strings.Join(slices.Sorted(maps.Keys(fields)), ", ")))
				continue
			}
			errs = append(errs, checkShape(p, m[k], ft)...)
		}
		return errs
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			return fielderr.List{fielderr.New(path, "%s is not a list", showValue(v))}
		}
		var errs fielderr.List
		for i, e := range l {
			errs = append(errs, checkShape(fmt.Sprintf("%s[%d]", path, i), e, t.Elem())...)
		}
		return errs
	case reflect.Map:
		if _, ok := v.(map[string]any); !ok {
			return fielderr.List{fielderr.New(path, "%s is not a mapping", showValue(v))}
		}
		return nil // free-form (metadata, status): anything goes
	case reflect.Interface:
		if t == anyType {
			return nil
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			return fielderr.List{fielderr.New(path, "%s is not a string", showValue(v))}
		}
		return nil
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return fielderr.List{fielderr.New(path, "%s is not true or false", showValue(v))}
		}
		return nil
	case reflect.Int, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return fielderr.List{fielderr.New(path, "%s is not a number", showValue(v))}
		}
		if _, err := strconv.ParseInt(n.String(), 10, 64); err != nil {
			return fielderr.List{fielderr.New(path, "%s is not a whole number", n)}
		}
		if t.Kind() == reflect.Int {
			if i, _ := strconv.ParseInt(n.String(), 10, 64); i < math.MinInt32 || i > math.MaxInt32 {
				return fielderr.List{fielderr.New(path, "%s is out of range", n)}
			}
		}
		return nil
	case reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			return fielderr.List{fielderr.New(path, "%s is not a number", showValue(v))}
		}
		if f, err := strconv.ParseFloat(n.String(), 64); err != nil || math.IsInf(f, 0) {
			return fielderr.List{fielderr.New(path, "%s is not a finite number", n)}
		}
		return nil
	}
	return fielderr.List{fielderr.New(path, "cannot check a value of Go type %s", t)}
}

// jsonFields maps the JSON names of t's exported fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	return m
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// showValue prints a decoded value briefly, the way it was probably written.
func showValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case nil:
		return "null"
	case []any:
		return fmt.Sprintf("a list of %d", len(x))
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprint(v)
}
