package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluice-net/sluice/pkg/lab/testserver"
	"github.com/sluice-net/sluice/pkg/netns"
)

// MatrixOptions select what `matrix` probes.
type MatrixOptions struct {
	Namespaces []string // empty: every namespace but kube-*
	Port       int
	Protocol   string
	Timeout    time.Duration
}

// Cell is one probe of the matrix.
type Cell struct {
	From, To string // NAMESPACE/POD
	OK       bool   // the destination pod itself answered
	Reply    string `json:",omitempty"`
	Error    string `json:",omitempty"`
}

// Matrix is the truth table: Cells[i][j] is Pods[i] → Pods[j].
type Matrix struct {
	Protocol string
	Port     int
	Pods     []string
	Cells    [][]Cell
}

// Reachable counts the probes that were answered by their destination.
func (m *Matrix) Reachable() (ok, total int) {
	for _, row := range m.Cells {
		for _, c := range row {
			total++
			if c.OK {
				ok++
			}
		}
	}
	return ok, total
}

// Matrix probes every selected pod from every selected pod, with real
// packets from inside each source pod's network namespace.
func (l *Lab) Matrix(ctx context.Context, o MatrixOptions) (*Matrix, error) {
	switch o.Protocol {
	case "tcp", "udp", "sctp":
	default:
		return nil, fmt.Errorf("--protocol %q: want tcp, udp or sctp", o.Protocol)
	}
	if o.Port < 1 || o.Port > 65535 {
		return nil, fmt.Errorf("--port %d: want 1 to 65535", o.Port)
	}
	cs, err := l.Client()
	if err != nil {
		return nil, err
	}
	list, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		sel := len(o.Namespaces) == 0 && !strings.HasPrefix(p.Namespace, "kube-") || slices.Contains(o.Namespaces, p.Namespace)
		if sel && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && !p.Spec.HostNetwork && p.DeletionTimestamp == nil {
			pods = append(pods, p)
		}
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	m := &Matrix{Protocol: o.Protocol, Port: o.Port}
	paths := make([]string, len(pods))
	for i := range pods {
		m.Pods = append(m.Pods, pods[i].Namespace+"/"+pods[i].Name)
		if paths[i], err = l.PodNetns(&pods[i]); err != nil {
			return nil, err
		}
	}
	m.Cells = make([][]Cell, len(pods))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range pods {
		m.Cells[i] = make([]Cell, len(pods))
		for j := range pods {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				cell := Cell{From: m.Pods[i], To: m.Pods[j]}
				addr := fmt.Sprintf("%s:%d", pods[j].Status.PodIP, o.Port)
				if strings.Contains(pods[j].Status.PodIP, ":") {
					addr = fmt.Sprintf("[%s]:%d", pods[j].Status.PodIP, o.Port)
				}
				var reply string
				err := netns.Do(paths[i], func() error {
					var err error
					reply, err = testserver.Probe(ctx, o.Protocol, addr, o.Timeout)
					return err
				})
				cell.Reply = reply
				if err != nil {
					cell.Error = err.Error()
				} else if name, _, perr := testserver.ParseReply(reply); perr != nil || name != pods[j].Name {
					cell.Error = fmt.Sprintf("answered by %q, not %s", reply, pods[j].Name)
				} else {
					cell.OK = true
				}
				m.Cells[i][j] = cell
			}()
		}
	}
	wg.Wait()
	return m, nil
}

// Print writes the truth table: rows are sources, columns destinations,
// "." reachable, "X" not.
func (m *Matrix) Print(w io.Writer) {
	ok, total := m.Reachable()
	fmt.Fprintf(w, "%s/%d: %d of %d probes reached their pod\n\n", m.Protocol, m.Port, ok, total)
	if len(m.Pods) == 0 {
		fmt.Fprintln(w, "(no running pods selected)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprint(tw, "FROM \\ TO\t")
	for j := range m.Pods {
		fmt.Fprintf(tw, "%d\t", j+1)
	}
	fmt.Fprintln(tw)
	for i, row := range m.Cells {
		fmt.Fprintf(tw, "%d %s\t", i+1, m.Pods[i])
		for _, c := range row {
			if c.OK {
				fmt.Fprint(tw, ".\t")
			} else {
				fmt.Fprint(tw, "X\t")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	var fails []string
	for _, row := range m.Cells {
		for _, c := range row {
			if !c.OK {
				fails = append(fails, fmt.Sprintf("  %s → %s: %s", c.From, c.To, c.Error))
			}
		}
	}
	if len(fails) > 0 {
		fmt.Fprintln(w, "\nunreachable:")
		for _, f := range fails[:min(len(fails), 20)] {
			fmt.Fprintln(w, f)
		}
		if len(fails) > 20 {
			fmt.Fprintf(w, "  … and %d more\n", len(fails)-20)
		}
	}
}

// JSON writes the matrix as JSON.
func (m *Matrix) JSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(m)
}
