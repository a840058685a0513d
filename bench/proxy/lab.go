// This file holds the outer run: the benchmark's own lab, up and down,
// around this program run again inside the lab's external namespace.

package main

import (
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/sluice-net/sluice/bench/internal/host"
	"github.com/sluice-net/sluice/bench/internal/labrun"
	"github.com/sluice-net/sluice/pkg/lab"
)

// outer brings the lab up, runs the measurements inside its external
// namespace, and brings the lab down whatever happened.
func outer() int {
	l := labrun.Lab{Bin: filepath.Join(binDir(), "sluice-lab"), StateDir: *stateDirF}
	port := *apiPortF
	if port == 0 {
		var err error
		if port, err = labrun.FreePort(); err != nil {
			port = 26443
		}
	}
	down := func() {
		if *keepLabF {
			logf("lab left running: %s --state-dir %s down", l.Bin, l.StateDir)
			return
		}
		logf("lab down")
		cmd := l.Command("down")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Run()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	logf("lab up (%s, api port %d)", *stateDirF, port)
	up := l.Command("up", "--nodes", "1", "--api-port", strconv.Itoa(port))
	up.Stdout, up.Stderr = os.Stderr, os.Stderr
	if err := up.Run(); err != nil {
		logf("lab up: %v", err)
		down()
		return 1
	}
	c, err := lab.LoadConfig(*stateDirF)
	if err != nil {
		logf("%v", err)
		down()
		return 1
	}
	cmd := host.InNetns(c.External().Netns, innerEnv)
	if err := cmd.Start(); err != nil {
		logf("%v", err)
		down()
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var rc int
	select {
	case err = <-done:
	case s := <-sig:
		cmd.Process.Signal(s)
		err = <-done
	}
	if err != nil {
		logf("measurements: %v", err)
		rc = 1
	}
	down()
	return rc
}
