//! The test world (everything here is simulated test infrastructure; no product crate depends
//! on it): finding the real binaries, simulated hosts, shim host tools and the multi-host
//! harness.

pub mod bins;
