"""Many machines, one warmstart: node agents on a Ray cluster run the engines; the pool places replicas."""
