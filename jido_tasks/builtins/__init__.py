"""Built-in actions: session context, session cache and coordinator (a port of the upstream)."""
