package results

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpread(t *testing.T) {
	if got := Spread("%.1f", []float64{3, 1, 2}); got != "2.0 (1.0–3.0)" {
		t.Errorf("Spread = %q", got)
	}
	if got := Spread("%.2f", []float64{4}); got != "4.00" {
		t.Errorf("Spread(one) = %q", got)
	}
}

func TestOrder(t *testing.T) {
	if got := Order(0, "a", "b"); got[0] != "a" {
		t.Errorf("repeat 0: %v", got)
	}
	if got := Order(1, "a", "b"); got[0] != "b" {
		t.Errorf("repeat 1: %v", got)
	}
	if got := Rotate(1, []int{0, 1, 100}); got[0] != 100 || got[2] != 0 {
		t.Errorf("Rotate(1) = %v", got)
	}
	if got := Rotate(2, []int{0, 1, 100}); got[0] != 0 {
		t.Errorf("Rotate(2) = %v", got)
	}
}

func TestFile(t *testing.T) {
	root := t.TempDir()
	f, err := Open(root, "x")
	if err != nil {
		t.Fatal(err)
	}
	f.Sample("a=%d", 1)
	f.Raw("iperf", []byte("{}\n"))
	f.Report("| t |\n")
	f.Close()
	if !strings.HasPrefix(filepath.Base(f.Path), "x-") || !strings.HasSuffix(f.Path, "-unknown.txt") {
		t.Errorf("path %s", f.Path)
	}
	b, _ := os.ReadFile(f.Path)
	for _, want := range []string{"# x at commit unknown", "sample a=1\n", "raw begin iperf\n{}\nraw end iperf\n", ReportBegin + "\n| t |\n" + ReportEnd + "\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("file lacks %q:\n%s", want, b)
		}
	}
}
