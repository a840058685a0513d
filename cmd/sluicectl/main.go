// Command sluicectl is Sluice's operator tool. main is wiring only: the commands live in
// root.go (exit statuses) and plan.go (capacity and address planning).
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
