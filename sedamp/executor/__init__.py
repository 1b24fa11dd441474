"""Where runtime processes run: the executor protocol, this machine, a Ray cluster."""
