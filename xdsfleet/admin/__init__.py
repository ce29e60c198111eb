"""The admin API: a read-only gRPC view of the clients, what they hold, and the members."""
