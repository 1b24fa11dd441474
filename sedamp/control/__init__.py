"""The controller process: supervision, the control loop, its records and commands, and the pure policy."""
