// CoreDNS with only the plugins the real node's cluster DNS uses: the upstream main package
// links every plugin, and with them every cloud provider's SDK.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The plugins' order in a server block, as CoreDNS's plugin.cfg orders them.
func init() {
	dnsserver.Directives = []string{"ready", "health", "errors", "log", "cache", "hosts", "kubernetes"}
}

func main() { coremain.Run() }
