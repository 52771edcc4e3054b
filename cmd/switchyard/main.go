// Command switchyard runs the forwarder, interchange and manager daemons,
// a whole local endpoint, and the client commands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	stop := startProfile(os.Args[1:])
	err := newRoot().Execute()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "switchyard:", err)
		os.Exit(exitCode(err))
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "switchyard",
		Short: "A ZeroMQ task interchange: forwarder, interchange and managers",
		Long: `Switchyard carries tasks from the people who submit them to the compute nodes
that run them, and results back.

One endpoint is three kinds of process:
  forwarder    service side: HTTP API for users, task store, ZMQ ROUTER
  interchange  the endpoint's broker: connects out to the forwarder, queues
               tasks, hands them to managers with free capacity
  manager      one per compute node: runs tasks on a pool of workers

Start all three on this machine with 'switchyard endpoint up', then submit
work with 'switchyard submit' and follow it with 'switchyard wait'.

` + exitTable,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(newForwarderCmd(), newInterchangeCmd(), newManagerCmd(), newEndpointCmd(),
		newSubmitCmd(), newStatusCmd(), newResultCmd(), newWaitCmd(), newCancelCmd(), newEndpointsCmd(), newTasksCmd(),
		newServingStateCmd(), newDemoCmd(), newBenchCmd(), newTokenCmd(), newStoreCmd(), newDocsCmd())
	return root
}

// signalContext ends on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
