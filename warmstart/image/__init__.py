"""OCI images of warmstart with one model baked in: the Containerfile, its build context, the base
made from Debian packages, and the podman/buildah calls that build and run it (no Docker daemon)."""
