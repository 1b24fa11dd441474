"""What runs inside the children of a run: the wire, sockets, the queue, workers,
sources, and the launcher that forks them."""
