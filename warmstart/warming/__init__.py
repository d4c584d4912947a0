"""The server's warming: request history in SQLite, and the task that runs the warming controller."""
