//! Benchmark helper (issue 7, `bench/run.sh`): serves the real HTTP API over the fake
//! hypervisor with many instances recorded, so that `GET /v1/instances` can be load-tested
//! without libvirt.
//!
//!     cargo run --release -p rhyzomesrv --example bench_api_server -- [--port P] [--instances N]
//!
//! Creates N instances (default 1000) through `Service::create`, then serves
//! `rhyzomesrv::http::router` on 127.0.0.1:P (default 0: any free port) and prints
//! `listening http://ADDR instances=N setup_ms=T` on stdout once it accepts connections. Runs
//! until killed; the state lives in a temporary directory that is removed on a clean exit.

use rhyzome_api::InstanceSpec;
use rhyzomesrv::auth::Caller;
use rhyzomesrv::backend::fake::FakeBackend;
use rhyzomesrv::config::Config;
use rhyzomesrv::service::Service;
use rhyzomesrv::store::Store;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

fn arg_value(args: &[String], name: &str, default: u64) -> u64 {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number")),
        None => default,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = arg_value(&args, "--port", 0) as u16;
    let count = arg_value(&args, "--instances", 1000) as usize;

    let dir = tempfile::tempdir()?;
    let kernels = dir.path().join("kernels");
    std::fs::create_dir(&kernels)?;
    let kernel = kernels.join("bench.virtio");
    // The fake backend never boots it; the service only checks that it looks like an ELF.
    let mut image = b"\x7fELF".to_vec();
    image.resize(16 * 1024, 0);
    std::fs::write(&kernel, image)?;
    let text = serde_json::json!({
        "BridgeInterface": "br0",
        "Hostname": "bench-api",
        "StateDir": dir.path().join("state"),
        "KernelDirs": [kernels],
    })
    .to_string();
    let config = Config::parse(&text, Path::new("bench.conf"))?;
    let store = Store::open(&config.state_dir)?;
    let service = Service::new(config, "qemu", store, Arc::new(FakeBackend::new()));

    let started = std::time::Instant::now();
    let kernel = kernel.to_str().expect("UTF-8 temp path").to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let service = service.clone();
        let spec = InstanceSpec {
            name: format!("bench-{i:04}"),
            kernel: kernel.clone(),
            kernel_parameters: format!(
                "--ipv4 10.{}.{}.{}/8 --name bench-{i:04}",
                i / 65536,
                (i / 256) % 256,
                i % 256
            ),
            ..Default::default()
        };
        tasks.spawn(async move { service.create(spec, &Caller::internal()).await });
        // Bounded concurrency: the store serialises writes anyway.
        if tasks.len() >= 16 {
            tasks.join_next().await.expect("task")??;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let listed = service.list(&Caller::internal())?.len();
    assert_eq!(listed, count, "the service lists every instance created");
    let setup_ms = started.elapsed().as_millis();

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("listening http://{addr} instances={count} setup_ms={setup_ms}");
    std::io::stdout().flush()?;
    axum::serve(listener, rhyzomesrv::http::router(service))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    drop(dir);
    Ok(())
}
