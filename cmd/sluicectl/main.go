// Command sluicectl is Sluice's operator tool. main is wiring only: the commands live in
// root.go (exit statuses, --kubeconfig), plan.go (capacity and address planning) and
// podnetwork.go (multitenant join / isolate / make-global).
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
