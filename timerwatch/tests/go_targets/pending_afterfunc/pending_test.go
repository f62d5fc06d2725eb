// A test that leaves a one-hour AfterFunc pending when it returns: the leak goleak users want
// caught at the end of a test binary. PENDING_FIXED=1 runs the fixed test, which stops it.
package pending

import (
	"os"
	"testing"
	"time"
)

//go:noinline
func startIdleTimeout() *time.Timer {
	return time.AfterFunc(time.Hour, func() {})
}

func TestIdleTimeout(t *testing.T) {
	timer := startIdleTimeout()
	if os.Getenv("PENDING_FIXED") != "" {
		timer.Stop()
	}
}
