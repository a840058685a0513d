package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// What a real node changes outside its state directory, and how it is undone:
//
//   - sysctls: kubelet insists on six machine-wide values (kubeletSysctls).
//     The lab sets them before the first kubelet starts (the kubelet runs
//     with protectKernelDefaults and only checks them), records the values
//     it found in MachineRunDir/machine.json, and the last lab with real
//     nodes to go down writes them back.
//   - directories: the mount points of a node's bind mounts (/var/lib/kubelet,
//     /etc/cni/net.d, /opt/cni/bin) must exist on the machine. Those the lab
//     makes are recorded too and removed (when empty) by the last lab.
//   - cgroups: one per node in every hierarchy (NodeCgroupRoot), removed by
//     down after every process in it is killed.
//   - MachineRunDir/<node namespace>: containerd's sockets.
//
// Mounts are only ever made inside a node's own mount namespace (see
// NodeMounts), so nothing is left mounted once the node's processes are gone.

// kubeletSysctls are the values kubelet's container manager requires
// (k8s.io/component-helpers/node/util/sysctl).
var kubeletSysctls = []struct {
	Name  string
	Value int
}{
	{"vm/overcommit_memory", 1},
	{"vm/panic_on_oom", 0},
	{"kernel/panic", 10},
	{"kernel/panic_on_oops", 1},
	{"kernel/keys/root_maxkeys", 1000000},
	{"kernel/keys/root_maxbytes", 25000000},
}

// machineRecord is MachineRunDir/machine.json.
type machineRecord struct {
	// Sysctls holds the values found before the first lab changed them.
	Sysctls map[string]int `json:"sysctls,omitempty"`
	// Dirs lists directories the lab made, parents first.
	Dirs []string `json:"dirs,omitempty"`
}

func machineRecordPath() string { return filepath.Join(MachineRunDir, "machine.json") }

// withMachineLock runs f holding an exclusive lock shared by every lab on
// the machine.
func withMachineLock(f func(*machineRecord) error) error {
	if err := os.MkdirAll(MachineRunDir, 0o755); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(MachineRunDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	var rec machineRecord
	if b, err := os.ReadFile(machineRecordPath()); err == nil {
		if err := json.Unmarshal(b, &rec); err != nil {
			return fmt.Errorf("%s: %w", machineRecordPath(), err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return f(&rec)
}

func saveMachineRecord(rec *machineRecord) error {
	b, _ := json.MarshalIndent(rec, "", "  ")
	return os.WriteFile(machineRecordPath(), append(b, '\n'), 0o644)
}

func readSysctl(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", name))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func writeSysctl(name string, v int) error {
	return os.WriteFile(filepath.Join("/proc/sys", name), []byte(strconv.Itoa(v)), 0o644)
}

// prepareMachine sets the sysctls and makes the mount points real nodes need,
// recording what it changed.
func (l *Lab) prepareMachine() error {
	return withMachineLock(func(rec *machineRecord) error {
		if rec.Sysctls == nil {
			rec.Sysctls = map[string]int{}
		}
		var changed []string
		for _, s := range kubeletSysctls {
			cur, err := readSysctl(s.Name)
			if err != nil {
				return err
			}
			if cur == s.Value {
				continue
			}
			if _, ok := rec.Sysctls[s.Name]; !ok {
				rec.Sysctls[s.Name] = cur
			}
			if err := writeSysctl(s.Name, s.Value); err != nil {
				return fmt.Errorf("sysctl %s: %w", s.Name, err)
			}
			changed = append(changed, fmt.Sprintf("%s %d→%d", strings.ReplaceAll(s.Name, "/", "."), cur, s.Value))
		}
		if len(changed) > 0 {
			fmt.Fprintf(l.Out, "set the sysctls kubelet requires (restored by the last `down`): %s\n", strings.Join(changed, ", "))
		}
		// The node's socket directories, under the lock: while one exists,
		// no other lab's down restores what is recorded here.
		for _, n := range l.C.NodeNames() {
			if err := os.MkdirAll(l.C.NodeRunDir(n), 0o755); err != nil {
				return err
			}
		}
		for _, d := range []string{nodeKubeletDir, nodeCNIConfDir, nodeCNIBinDir, nodeLogDir, nodeSluiceStateDir, nodeSluiceRunDir, nodeNetnsDir} {
			made, err := mkdirAllRecord(d)
			rec.Dirs = append(rec.Dirs, made...)
			if err != nil {
				return err
			}
		}
		return saveMachineRecord(rec)
	})
}

// mkdirAllRecord is os.MkdirAll returning the directories it made, parents
// first.
func mkdirAllRecord(d string) ([]string, error) {
	var missing []string
	for p := d; p != "/"; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		missing = append(missing, p)
	}
	slices.Reverse(missing)
	var made []string
	for _, p := range missing {
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return made, err
		}
		made = append(made, p)
	}
	return made, nil
}

// releaseMachine undoes prepareMachine when no lab's real node remains (no
// node directory in MachineRunDir).
func (l *Lab) releaseMachine() error {
	if _, err := os.Stat(MachineRunDir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return withMachineLock(func(rec *machineRecord) error {
		ents, err := os.ReadDir(MachineRunDir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.IsDir() {
				return nil // another lab's node
			}
		}
		var errs []error
		for _, s := range kubeletSysctls {
			if v, ok := rec.Sysctls[s.Name]; ok {
				if err := writeSysctl(s.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("restore sysctl %s: %w", s.Name, err))
				}
			}
		}
		for _, d := range slices.Backward(rec.Dirs) {
			if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove %s (made by the lab): %w", d, err))
			}
		}
		os.Remove(machineRecordPath())
		os.Remove(filepath.Join(MachineRunDir, "lock"))
		unix.Rmdir(MachineRunDir)
		return errors.Join(errs...)
	})
}

// cgroupMount is one cgroup hierarchy.
type cgroupMount struct {
	Dir string
	V2  bool
	// Cpuset is set on the v1 hierarchy with the cpuset controller, whose
	// new cgroups need cpuset.cpus and cpuset.mems before they can hold a
	// process.
	Cpuset bool
}

// cgroupMounts lists the machine's cgroup hierarchies from mountinfo.
func cgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseCgroupMounts(f)
}

func parseCgroupMounts(f io.Reader) ([]cgroupMount, error) {
	var ms []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL…] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		switch qf[0] {
		case "cgroup":
			ms = append(ms, cgroupMount{Dir: pf[4], Cpuset: slices.Contains(strings.Split(qf[2], ","), "cpuset")})
		case "cgroup2":
			ms = append(ms, cgroupMount{Dir: pf[4], V2: true})
		}
	}
	return ms, sc.Err()
}

// ensureNodeCgroups makes the node's cgroup root in every v1 hierarchy
// (kubelet checks it exists in each before it starts).
func ensureNodeCgroups(root string) error {
	ms, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.V2 {
			continue
		}
		d := filepath.Join(m.Dir, root)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if m.Cpuset {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if b, _ := os.ReadFile(filepath.Join(d, f)); strings.TrimSpace(string(b)) != "" {
					continue
				}
				b, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					return fmt.Errorf("%s: %w", filepath.Join(d, f), err)
				}
			}
		}
	}
	return nil
}

// removeNodeCgroups kills every process left in the node's cgroups (pods'
// containers outlive containerd and their shims) and removes the cgroups in
// every hierarchy, children first.
func removeNodeCgroups(root string) error {
	ms, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		d := filepath.Join(m.Dir, root)
		if _, err := os.Stat(d); err != nil {
			continue
		}
		for i := 0; ; i++ {
			pids := cgroupPids(d)
			if len(pids) == 0 {
				break
			}
			if i == 100 {
				errs = append(errs, fmt.Errorf("%s: processes %v did not die", d, pids))
				break
			}
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond)
		}
		var dirs []string
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, x := range slices.Backward(dirs) {
			if err := unix.Rmdir(x); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", x, err))
			}
		}
	}
	return errors.Join(errs...)
}

// cgroupPids lists the processes in a cgroup and its descendants.
func cgroupPids(d string) []int {
	var pids []int
	filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
		return nil
	})
	return pids
}

// PodPid returns a process of the pod with uid on a real node (its pause
// container, or any other), found by its cgroup: the kubelet's cgroupfs
// driver puts every container of a pod under …/pod<uid>/.
func PodPid(uid string) (int, error) { return PodProcess(uid, "") }

// PodProcess returns the process of the pod with uid whose command line contains cmd
// ("" = any process of the pod).
func PodProcess(uid, cmd string) (int, error) {
	want := "/pod" + uid + "/"
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil || !strings.Contains(string(b), want) {
			continue
		}
		if c, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); strings.Contains(string(c), cmd) {
			return pid, nil
		}
	}
	if cmd != "" {
		return 0, fmt.Errorf("no process of pod %s runs %q", uid, cmd)
	}
	return 0, fmt.Errorf("no process of pod %s is running", uid)
}

// NodeMounts runs as a real node's namespace holder, inside a mount
// namespace of its own (unshare --mount --propagation slave): it bind-mounts
// each SRC:DST and waits for a signal. The mounts live as long as the
// namespace, that is until the holder and every process that entered it
// (containerd, kubelet, shims) are gone; they never reach the machine's own
// mount namespace.
//
// outer is the mount namespace of the lab that started it (as
// /proc/PID/ns/mnt reads): the holder refuses to mount anything in it.
func NodeMounts(ctx context.Context, outer string, binds []string) error {
	if self := mountNS("self"); outer == "" || self == "" || self == outer {
		return fmt.Errorf("node-mounts: refusing to mount: in mount namespace %q, not one of its own (run it under unshare --mount)", self)
	}
	for _, b := range binds {
		src, dst, err := SplitBind(b)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", src, dst, err)
		}
	}
	// Shared within the node (still a slave of the machine's mounts): a mount made in the
	// node — a pod's network namespace under /run/netns — reaches the containers whose
	// hostPath volumes propagate from the host (HostToContainer), as on a real node.
	if err := unix.Mount("", "/", "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make the node's mounts shared: %w", err)
	}
	fmt.Printf("node mounts ready: %s\n", strings.Join(binds, " "))
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return nil
}

// killReferring kills every process whose command line contains s.
func killReferring(s string) {
	for range 50 {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.Contains(string(b), s) {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unmountUnder detaches every mount of this mount namespace at or below dir,
// deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var under []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			under = append(under, f[4])
		}
	}
	slices.SortFunc(under, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, m := range under {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}
