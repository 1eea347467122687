//! The test world: helpers to find and run the real binaries, simulated hosts (later issues).
