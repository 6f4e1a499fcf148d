//! The end-to-end suite: the operator, `serve` and KEDA against a real control plane
//! (kube-apiserver, etcd, kube-controller-manager and the KEDA operator on loopback, started by
//! `scripts/dev-cluster`). `scripts/e2e.sh` brings the cluster up, runs this suite and tears it
//! down; the suite needs `KUBECONFIG` (the admin kubeconfig `scripts/dev-cluster` writes) and
//! `kubectl` and `helm` on `PATH`, and refuses to run without them.
//!
//! The steps run in order, each a test that can fail; later steps build on what earlier ones
//! installed (the CRDs, the operator). The suite ends with `N passed, N failed`.

mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod steps;

use std::time::Instant;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    runtime.block_on(async {
        let mut ctx = match cluster::Ctx::connect().await {
            Ok(ctx) => ctx,
            Err(e) => {
                println!("FAILED the cluster: {e}");
                failed += 1;
                return;
            }
        };
        for (name, step) in steps::ALL {
            if filter.as_deref().is_some_and(|f| !name.contains(f)) {
                continue;
            }
            let started = Instant::now();
            println!("step {name} ...");
            match step(&mut ctx).await {
                Ok(()) => {
                    passed += 1;
                    println!("ok {name} ({:.1} s)", started.elapsed().as_secs_f64());
                }
                Err(e) => {
                    failed += 1;
                    println!("FAILED {name} ({:.1} s): {e}", started.elapsed().as_secs_f64());
                }
            }
        }
        ctx.stop().await;
    });
    println!("{passed} passed, {failed} failed");
    if failed > 0 || passed == 0 {
        std::process::exit(1);
    }
}
