//! The test world (everything here is simulated test infrastructure; no product crate depends
//! on it): finding the real binaries, simulated hosts, shim host tools and the multi-host
//! harness.

pub mod bins;
pub mod demo;
pub mod harness;
pub mod netns;
pub mod roots;
pub mod shim;
pub mod world;

pub use harness::{Testbed, UpOptions};
