// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 at the version
// Kubernetes 1.34 is tested against (that module's own main cannot be `go install`ed).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
