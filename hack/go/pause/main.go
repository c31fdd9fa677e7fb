// Command pause is the sandbox process of every Pod on the project's real node (containerd's
// pinned sandbox image, localhost/mlmodel/pause). It holds the Pod's namespaces and does
// nothing else: it waits for SIGTERM or SIGINT and exits 0. Run as PID 1 of a PID
// namespace it also reaps the processes re-parented to it, so none stays a zombie.
//
// Built static (CGO_ENABLED=0) by hack/buildah-images.sh into a scratch image.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const version = "1.0"

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "-v" || os.Args[1] == "--version" {
			fmt.Println("pause", version)
			return
		}
		fmt.Fprintln(os.Stderr, "usage: pause [-v]")
		os.Exit(2)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var children chan os.Signal // nil unless PID 1: a nil channel never receives
	if os.Getpid() == 1 {
		children = make(chan os.Signal, 1)
		signal.Notify(children, syscall.SIGCHLD)
		reap() // anything that exited before Notify took effect
	}
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			reap()
		}
	}
}

// reap collects every child that has exited, without blocking. Signals coalesce, so one
// SIGCHLD may stand for several exits: loop until none is left.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
