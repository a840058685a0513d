package labcmd

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-net/sluice/pkg/lab/image"
	"github.com/sluice-net/sluice/pkg/version"
)

// imagesCommand is `sluice-lab images`: the OCI image archives of Sluice.
func imagesCommand() *cobra.Command {
	var out, binDir, ver, epoch string
	var refresh bool
	cmd := &cobra.Command{
		Use:   "images [--out DIR] [--version V] [--bin-dir DIR] [--source-date-epoch N]",
		Short: "Build Sluice's OCI image archives (Sluice, pause, test server) without a container engine",
		Long: `Build three OCI image layout archives, importable with
` + "`ctr -n k8s.io images import FILE`" + `:

  sluice.tar      sluice.dev/sluice:VERSION (Debian root file system with nft
                  and ip, plus sluice-agent, sluice-controller, sluice-cni and
                  sluicectl in /usr/local/bin)
  pause.tar       ` + image.PauseRef + ` (the pod sandbox)
  testserver.tar  sluice.dev/sluice-testserver:VERSION (sluice-lab serve)

and images.json / images.txt with their references and digests. The binaries
must be static (CGO_ENABLED=0), as ` + "`make images`" + ` builds them. The Debian
root file system is made once with mmdebstrap and cached under the cache
root (` + "$SLUICE_CACHE_DIR" + `, default ~/.cache/sluice). The same binaries, package
list and epoch give the same digests.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := image.Options{OutDir: out, BinDir: binDir, Version: ver, RefreshRootfs: refresh, Log: cmd.OutOrStdout()}
			if o.BinDir == "" {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				o.BinDir = filepath.Dir(self)
			}
			if epoch == "" {
				epoch = os.Getenv("SOURCE_DATE_EPOCH")
			}
			if epoch != "" {
				n, err := strconv.ParseInt(epoch, 10, 64)
				if err != nil || n < 0 {
					return fmt.Errorf("source date epoch %q: want seconds since 1970", epoch)
				}
				o.Epoch = time.Unix(n, 0)
			}
			m, err := image.BuildAll(cmd.Context(), o)
			if err != nil {
				return err
			}
			if o.OutDir == "" {
				o.OutDir = image.DefaultOutDir()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d images, %s and %s\n", len(m.Images),
				filepath.Join(o.OutDir, "images.json"), filepath.Join(o.OutDir, "images.txt"))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory for the archives (default <cache root>/images)")
	cmd.Flags().StringVar(&binDir, "bin-dir", "", "directory of the static binaries (default: beside sluice-lab)")
	cmd.Flags().StringVar(&ver, "version", "", "tag of the Sluice and test-server images (default: this binary's version, "+version.Version+")")
	cmd.Flags().StringVar(&epoch, "source-date-epoch", "", "date of every file and config, in seconds since 1970 (default $SOURCE_DATE_EPOCH, else 0)")
	cmd.Flags().BoolVar(&refresh, "refresh-rootfs", false, "make the Debian root file system again (newer package versions) instead of using the cached one")
	return cmd
}
