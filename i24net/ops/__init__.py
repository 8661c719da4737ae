"""Running networks: the supervisor, the demo, the chaos soak and its outside history, the fault proxy."""
