// Package version holds the version of Sluice's binaries, set when they are
// linked: go build -ldflags "-X github.com/sluice-net/sluice/pkg/version.Version=v1.2.3".
package version

// Version is `git describe --tags --always --dirty` of the source the binary
// was built from, or "dev" when the build did not set it.
var Version = "dev"
