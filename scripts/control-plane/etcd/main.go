// etcd at the version k8s.io/kubernetes itself requires (go.etcd.io/etcd/server/v3 in its
// go.mod); the upstream binary's main package lives in a module of its own that adds nothing.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
