"""The pool owns every replica: lifecycle, leases, holding requests while a replica starts, keep-alive."""
