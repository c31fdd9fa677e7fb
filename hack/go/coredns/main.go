// Command coredns is CoreDNS with only the plugins the local cluster's DNS needs: the
// kubernetes plugin answers cluster.local from the apiserver, nothing is forwarded, so
// no lookup made by a pod on the harness's real node ever leaves the machine.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
