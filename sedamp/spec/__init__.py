"""The topology: its model, loading and checks, its JSON Schema and its diagram. No processes."""
