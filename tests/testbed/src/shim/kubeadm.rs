//! `kubeadm` shim (filled by step 4): init, join, token create, reset against the simulated
//! cluster that the harness runs.

use super::Ctx;

/// `kubeadm ...`.
pub fn main(ctx: &mut Ctx) -> i32 {
    eprintln!("kubeadm: {:?} is not simulated yet", ctx.args);
    1
}
