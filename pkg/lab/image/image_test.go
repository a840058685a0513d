package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

var epoch = time.Unix(1700000000, 0)

type tarFile struct {
	name, link, uname string
	typ               byte
	mode              int64
	mtime             time.Time
	data              string
}

// listTar returns "name type mode uid/gid uname mtime size linkname" per entry.
func listTar(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out = append(out, strings.Join([]string{h.Name, string(h.Typeflag), strconv.FormatInt(h.Mode, 8),
			strconv.Itoa(h.Uid) + "/" + strconv.Itoa(h.Gid), h.Uname + ":" + h.Gname, h.ModTime.UTC().Format(time.RFC3339),
			string(b), h.Linkname}, " "))
	}
}

func writeTar(t *testing.T, files []tarFile) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Typeflag: f.typ, Mode: f.mode, ModTime: f.mtime, Uname: f.uname, Gname: f.uname,
			Linkname: f.link, Size: int64(len(f.data)), AccessTime: f.mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(f.data))
	}
	tw.Close()
	return b.Bytes()
}

func TestWriteLayerTar(t *testing.T) {
	src := filepath.Join(t.TempDir(), "bin")
	os.WriteFile(src, []byte("#!binary"), 0o600)
	entries := []Entry{
		{Path: "/usr/local/bin/tool", Mode: 0o755, Source: src},
		{Path: "etc/motd", Mode: 0o644, Data: []byte("hi\n")},
		{Path: "usr/bin/tool", Mode: fs.ModeSymlink | 0o777, Link: "../local/bin/tool"},
		{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	}
	var a, b bytes.Buffer
	if err := WriteLayerTar(&a, entries, epoch); err != nil {
		t.Fatal(err)
	}
	rev := slices.Clone(entries)
	slices.Reverse(rev)
	os.Chtimes(src, time.Now(), time.Now().Add(time.Hour)) // the source's own time is not used
	if err := WriteLayerTar(&b, rev, epoch); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("the same entries in another order gave another tar")
	}
	got := listTar(t, &a)
	want := []string{
		"etc/ 5 755 0/0 : 2023-11-14T22:13:20Z  ",
		"etc/motd 0 644 0/0 : 2023-11-14T22:13:20Z hi\n ",
		"tmp/ 5 1777 0/0 : 2023-11-14T22:13:20Z  ",
		"usr/ 5 755 0/0 : 2023-11-14T22:13:20Z  ",
		"usr/bin/ 5 755 0/0 : 2023-11-14T22:13:20Z  ",
		"usr/bin/tool 2 777 0/0 : 2023-11-14T22:13:20Z  ../local/bin/tool",
		"usr/local/ 5 755 0/0 : 2023-11-14T22:13:20Z  ",
		"usr/local/bin/ 5 755 0/0 : 2023-11-14T22:13:20Z  ",
		"usr/local/bin/tool 0 755 0/0 : 2023-11-14T22:13:20Z #!binary ",
	}
	if !slices.Equal(got, want) {
		t.Errorf("layer tar:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := WriteLayerTar(io.Discard, append(entries, Entry{Path: "etc/motd/x", Data: nil}), epoch); err == nil {
		t.Error("a file under a file was accepted")
	}
	if err := WriteLayerTar(io.Discard, append(entries, Entry{Path: "./etc/motd", Data: nil}), epoch); err == nil {
		t.Error("a path listed twice was accepted")
	}
	if err := WriteLayerTar(io.Discard, []Entry{{Path: "../x"}}, epoch); err == nil {
		t.Error("a path outside the root was accepted")
	}
}

func TestNormalizeTar(t *testing.T) {
	later := epoch.Add(48 * time.Hour)
	older := epoch.Add(-48 * time.Hour)
	files := []tarFile{
		{name: "./", typ: tar.TypeDir, mode: 0o755, mtime: later},
		{name: "./usr/", typ: tar.TypeDir, mode: 0o755, mtime: later, uname: "root"},
		{name: "./usr/bin/", typ: tar.TypeDir, mode: 0o755, mtime: later},
		// zz is the file, aa the hard link: after sorting, aa must carry the data.
		{name: "./usr/bin/zz", typ: tar.TypeReg, mode: 0o755, mtime: older, data: "binary"},
		{name: "./usr/bin/aa", typ: tar.TypeLink, link: "./usr/bin/zz", mtime: older},
		{name: "./usr/bin/mm", typ: tar.TypeLink, link: "./usr/bin/zz", mtime: older},
		{name: "./dev/", typ: tar.TypeDir, mode: 0o755, mtime: later},
		{name: "./dev/null", typ: tar.TypeChar, mode: 0o666, mtime: later},
		{name: "./dev/fd", typ: tar.TypeSymlink, link: "/proc/self/fd", mtime: later},
		{name: "./bin", typ: tar.TypeSymlink, link: "usr/bin", mtime: later},
	}
	var a bytes.Buffer
	if err := NormalizeTar(&a, bytes.NewReader(writeTar(t, files)), NormalizeOptions{Epoch: epoch, DropUnder: []string{"dev"}}); err != nil {
		t.Fatal(err)
	}
	got := listTar(t, bytes.NewReader(a.Bytes()))
	e, o := "2023-11-14T22:13:20Z", "2023-11-12T22:13:20Z"
	want := []string{
		"bin 2 0 0/0 : " + e + "  usr/bin",
		"dev/ 5 755 0/0 : " + e + "  ",
		"usr/ 5 755 0/0 : " + e + "  ",
		"usr/bin/ 5 755 0/0 : " + e + "  ",
		"usr/bin/aa 0 755 0/0 : " + o + " binary ",
		"usr/bin/mm 1 755 0/0 : " + o + "  usr/bin/aa",
		"usr/bin/zz 1 755 0/0 : " + o + "  usr/bin/aa",
	}
	if !slices.Equal(got, want) {
		t.Errorf("normalized:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Another order, owner names and times past the epoch: the same bytes.
	shuffled := slices.Clone(files)
	slices.Reverse(shuffled[1:])
	for i := range shuffled {
		shuffled[i].uname = "someone"
		if shuffled[i].mtime.Equal(later) {
			shuffled[i].mtime = later.Add(time.Hour)
		}
	}
	// The hard link must still follow its target in the input.
	slices.SortStableFunc(shuffled, func(x, y tarFile) int {
		if x.typ == tar.TypeLink && y.typ != tar.TypeLink {
			return 1
		}
		if y.typ == tar.TypeLink && x.typ != tar.TypeLink {
			return -1
		}
		return 0
	})
	var b bytes.Buffer
	if err := NormalizeTar(&b, bytes.NewReader(writeTar(t, shuffled)), NormalizeOptions{Epoch: epoch, DropUnder: []string{"dev"}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Errorf("reordered input normalized differently:\n%s", strings.Join(listTar(t, &b), "\n"))
	}

	// A device node outside the dropped directories is refused.
	if err := NormalizeTar(io.Discard, bytes.NewReader(writeTar(t, files)), NormalizeOptions{Epoch: epoch}); err == nil {
		t.Error("a device node was accepted")
	}
}

// testInputs writes a small root file system layer and a "binary" the way
// BuildAll's inputs look, and returns the options to build from them.
func testInputs(t *testing.T, binary string) (Options, Rootfs) {
	t.Helper()
	dir := t.TempDir()
	rfs := Rootfs{Dir: dir, Layer: filepath.Join(dir, "rootfs.tar.gz")}
	raw := writeTar(t, []tarFile{
		{name: "./etc/", typ: tar.TypeDir, mode: 0o755, mtime: epoch},
		{name: "./etc/os-release", typ: tar.TypeReg, mode: 0o644, mtime: epoch, data: "ID=test\n"},
		{name: "./usr/sbin/", typ: tar.TypeDir, mode: 0o755, mtime: epoch},
		{name: "./usr/sbin/nft", typ: tar.TypeReg, mode: 0o755, mtime: epoch, data: "nft"},
	})
	if _, err := WriteGzipLayer(rfs.Layer, func(w io.Writer) error {
		return NormalizeTar(w, bytes.NewReader(raw), NormalizeOptions{Epoch: epoch})
	}); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	for _, b := range SluiceBinaries {
		os.WriteFile(filepath.Join(bin, b), []byte(binary+" "+b), 0o755)
	}
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	return Options{OutDir: out, BinDir: bin, Version: "v0.0.0-test", Epoch: epoch, Rootfs: DefaultRootfs()}, rfs
}

// buildTest builds the Sluice image from test inputs; the binaries are not
// ELF files, so the static check is bypassed by building the spec directly.
func buildTest(t *testing.T, o Options, rfs Rootfs) Result {
	t.Helper()
	var entries []Entry
	for _, b := range SluiceBinaries {
		entries = append(entries, Entry{Path: "usr/local/bin/" + b, Mode: 0o755, Source: filepath.Join(o.BinDir, b)})
	}
	base, err := GzipLayer(rfs.Layer)
	if err != nil {
		t.Fatal(err)
	}
	bins, done, err := binariesLayer(o.OutDir, "sluice", entries, o.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	r, err := Build(filepath.Join(o.OutDir, "sluice.tar"), Spec{
		Ref: SluiceRepo + ":" + o.Version, Created: o.Epoch,
		Entrypoint: []string{"/usr/local/bin/sluice-agent"}, Env: []string{"PATH=" + Path},
		Layers: []Layer{{base, "rootfs"}, {bins, "binaries"}},
	}, o.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBuildReproducible(t *testing.T) {
	o1, r1 := testInputs(t, "binary-1")
	a := buildTest(t, o1, r1)
	o2, r2 := testInputs(t, "binary-1") // the same inputs, made again elsewhere
	// Other times on the inputs' files must not matter.
	for _, b := range SluiceBinaries {
		os.Chtimes(filepath.Join(o2.BinDir, b), time.Now(), time.Now().Add(-time.Hour))
	}
	time.Sleep(1100 * time.Millisecond) // and neither must the clock
	b := buildTest(t, o2, r2)
	if a.Digest != b.Digest || a.ArchiveSHA != b.ArchiveSHA {
		t.Fatalf("same inputs, different images: %s (archive %s) and %s (archive %s)", a.Digest, a.ArchiveSHA, b.Digest, b.ArchiveSHA)
	}

	o3, r3 := testInputs(t, "binary-2") // one binary byte changed
	c := buildTest(t, o3, r3)
	if c.Digest == a.Digest {
		t.Error("a changed binary left the digest unchanged")
	}
	o4, r4 := testInputs(t, "binary-1")
	o4.Epoch = epoch.Add(time.Second)
	d := buildTest(t, o4, r4)
	if d.Digest == a.Digest {
		t.Error("a changed epoch left the digest unchanged")
	}
	o5, r5 := testInputs(t, "binary-1")
	o5.Version = "v0.0.1-test"
	e := buildTest(t, o5, r5)
	if e.Digest != a.Digest {
		t.Error("the tag changed the manifest digest (it belongs in index.json only)")
	}
	if e.ArchiveSHA == a.ArchiveSHA || e.Ref == a.Ref {
		t.Error("another tag gave the same archive")
	}
}

// TestArchive reads an archive back as containerd's importer would: the
// oci-layout file, index.json naming the image, and every blob present
// under its digest.
func TestArchive(t *testing.T) {
	o, rfs := testInputs(t, "binary-1")
	r := buildTest(t, o, rfs)
	if r.Ref != "sluice.dev/sluice:v0.0.0-test" || r.Repository != "sluice.dev/sluice" || r.Tag != "v0.0.0-test" {
		t.Errorf("result %+v", r)
	}
	f, err := os.Open(r.Archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(epoch) || h.Uid != 0 || h.Uname != "" {
			t.Errorf("%s: mtime %v uid %d uname %q", h.Name, h.ModTime, h.Uid, h.Uname)
		}
		if h.Typeflag == tar.TypeReg {
			files[h.Name], _ = io.ReadAll(tr)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("archive entries not sorted: %v", names)
	}
	if got := string(files["oci-layout"]); !strings.Contains(got, `"imageLayoutVersion": "1.0.0"`) && !strings.Contains(got, `"imageLayoutVersion":"1.0.0"`) {
		t.Errorf("oci-layout %q", got)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(files["index.json"]))
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests", len(idx.Manifests))
	}
	m := idx.Manifests[0]
	if m.Digest.String() != r.Digest || m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("index.json manifest %s %s, want %s", m.MediaType, m.Digest, r.Digest)
	}
	if m.Annotations[AnnotationImageName] != r.Ref || m.Annotations[AnnotationRefName] != "v0.0.0-test" {
		t.Errorf("annotations %v", m.Annotations)
	}
	if m.Platform == nil || m.Platform.OS != "linux" || m.Platform.Architecture == "" {
		t.Errorf("platform %+v", m.Platform)
	}
	for name, b := range files {
		if hexd, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != hexd {
				t.Errorf("blob %s has digest %x", name, sum)
			}
		}
	}
	blob := func(h v1.Hash) []byte {
		b, ok := files["blobs/sha256/"+h.Hex]
		if !ok {
			t.Fatalf("blob %s missing", h)
		}
		return b
	}
	man, err := v1.ParseManifest(bytes.NewReader(blob(m.Digest)))
	if err != nil {
		t.Fatal(err)
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if !cfg.Created.Time.Equal(epoch) || len(cfg.RootFS.DiffIDs) != 2 || cfg.Config.Entrypoint[0] != "/usr/local/bin/sluice-agent" {
		t.Errorf("config %+v", cfg)
	}
	for _, h := range cfg.History {
		if !h.Created.Time.Equal(epoch) {
			t.Errorf("history %+v", h)
		}
	}
	// The second layer holds the binaries.
	if len(man.Layers) != 2 || man.Layers[1].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Fatalf("layers %+v", man.Layers)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(man.Layers[1].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(listTar(t, zr), "\n")
	if !strings.Contains(got, "usr/local/bin/sluice-agent 0 755 0/0 : 2023-11-14T22:13:20Z binary-1 sluice-agent") {
		t.Errorf("binaries layer:\n%s", got)
	}
}

func TestStaticBinary(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "script"), []byte("#!/bin/sh\n"), 0o755)
	if _, err := StaticBinary(dir, "script"); err == nil {
		t.Error("a shell script passed as a static binary")
	}
	if _, err := StaticBinary("/bin", "sh"); err == nil {
		t.Error("/bin/sh (dynamically linked) passed as a static binary")
	}
}

func TestManifestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	m := Manifest{Version: "v1", Packages: "sluice-packages.txt", Images: []Result{
		{Name: "pause", Ref: PauseRef, Digest: "sha256:ab", Archive: filepath.Join(dir, "pause.tar")},
	}}
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	txt, _ := os.ReadFile(filepath.Join(dir, "images.txt"))
	if string(txt) != "pause sluice.dev/pause:3.10-sluice@sha256:ab pause.tar\n" {
		t.Errorf("images.txt %q", txt)
	}
	back, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := back.Get("pause"); !ok || r.Archive != filepath.Join(dir, "pause.tar") {
		t.Errorf("read back %+v", back)
	}
}

func TestRootfsKey(t *testing.T) {
	a := DefaultRootfs()
	b := DefaultRootfs()
	b.Packages = []string{"nftables", "iproute2"}
	if a.Key() != b.Key() {
		t.Error("the order of the package list changed the cache key")
	}
	b.Packages = append(b.Packages, "ca-certificates")
	if a.Key() == b.Key() {
		t.Error("another package list kept the cache key")
	}
}

// TestEnsureLabImages builds sluice-pause and sluice-lab statically from this
// source tree (slow on a cold build cache, so only with
// SLUICE_TEST_LAB_IMAGES=1) and checks the two archives, and that a second
// call gives the same digests.
func TestEnsureLabImages(t *testing.T) {
	if os.Getenv("SLUICE_TEST_LAB_IMAGES") != "1" {
		t.Skip("set SLUICE_TEST_LAB_IMAGES=1 to build the lab images from source")
	}
	src, err := FindSource(".")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	lo := LabOptions{BinDir: t.TempDir(), SourceDir: src, OutDir: out, Version: "v0.0.0-test"}
	a, err := EnsureLabImages(t.Context(), lo)
	if err != nil {
		t.Fatal(err)
	}
	if a.Pause.Ref != PauseRef || a.TestServer.Ref != TestServerRepo+":v0.0.0-test" {
		t.Errorf("refs %s, %s", a.Pause.Ref, a.TestServer.Ref)
	}
	for _, r := range []Result{a.Pause, a.TestServer} {
		idx, err := ReadArchiveIndex(r.Archive)
		if err != nil {
			t.Fatal(err)
		}
		if got := idx.Manifests[0].Annotations[AnnotationImageName]; got != r.Ref {
			t.Errorf("%s names %q", r.Archive, got)
		}
	}
	lo.BinDir = filepath.Join(out, "bin") // the static binaries built above
	b, err := EnsureLabImages(t.Context(), lo)
	if err != nil {
		t.Fatal(err)
	}
	if a.Pause.Digest != b.Pause.Digest || a.TestServer.Digest != b.TestServer.Digest {
		t.Errorf("digests changed between two calls: %+v / %+v", a, b)
	}
}
