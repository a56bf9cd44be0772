"""Well-known names and interfaces the benchmark's own peers use."""

ECHO_NAME = "org.sandbus.Bench.Echo"        # the echo service
EMITTER_NAME = "org.sandbus.Bench.Emitter"  # the broadcast signal emitter
ECHO_PATH = "/org/sandbus/Bench"
ECHO_IFACE = "org.sandbus.Bench"
SIGNAL_IFACE = "org.sandbus.Bench.Signals"

# Names a filtered/contained client must be allowed to talk to.
TALK_NAMES = (ECHO_NAME, EMITTER_NAME)
