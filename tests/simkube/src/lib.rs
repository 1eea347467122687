//! Simulated Kubernetes API server for the test world (filled by the simulated-cluster issue).
