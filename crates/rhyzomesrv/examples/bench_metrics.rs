//! Benchmark helper (issue 17, `bench/metrics.sh`): the cost of `GET /metrics` with many
//! running instances, over the fake hypervisor, so that rhyzome's own share of a scrape (store
//! read, ownership filter, exposition, HTTP) is measured at sizes the lab cannot boot.
//!
//!     cargo run -p rhyzomesrv --example bench_metrics -- [--instances N] [--scrapes M] [--testbed]
//!
//! Creates N instances (default 500) through `Service::create` (with `--testbed`: as one test
//! bed of a seed and N-1 nodes on its own network, so that the test-bed and network gauges
//! and the `testbed`/`group` labels are part of every scrape), gives each domain a NIC and
//! non-zero counters, serves the real router on loopback, scrapes it M times (default 200)
//! one after another and prints `instances=N scrapes=M bytes=B p50_ms=.. p99_ms=.. max_ms=..`.

use rhyzome_api::InstanceSpec;
use rhyzomesrv::auth::Caller;
use rhyzomesrv::backend::counters::InterfaceCounters;
use rhyzomesrv::backend::fake::FakeBackend;
use rhyzomesrv::backend::DomainCounters;
use rhyzomesrv::config::Config;
use rhyzomesrv::service::Service;
use rhyzomesrv::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn arg_value(args: &[String], name: &str, default: usize) -> usize {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number")),
        None => default,
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = arg_value(&args, "--instances", 500);
    let scrapes = arg_value(&args, "--scrapes", 200);
    let as_testbed = args.iter().any(|a| a == "--testbed");
    let runtime = tokio::runtime::Runtime::new()?;

    let dir = tempfile::tempdir()?;
    let kernels = dir.path().join("kernels");
    std::fs::create_dir(&kernels)?;
    let kernel = kernels.join("bench.virtio");
    let mut image = b"\x7fELF".to_vec();
    image.resize(16 * 1024, 0);
    std::fs::write(&kernel, image)?;
    let text = serde_json::json!({
        "BridgeInterface": "br0",
        "Hostname": "bench-metrics",
        "StateDir": dir.path().join("state"),
        "KernelDirs": [kernels],
    })
    .to_string();
    let config = Config::parse(&text, Path::new("bench.conf"))?;
    let store = Store::open(&config.state_dir)?;
    let backend = Arc::new(FakeBackend::new());
    let service = Service::new(config, "qemu", store, backend.clone());
    let kernel = kernel.to_str().expect("UTF-8 temp path").to_string();

    let addr = runtime.block_on(async {
        let mut ids = Vec::with_capacity(count);
        if as_testbed {
            let file = rhyzomesrv::testing::two_group_bed(
                "bench",
                &kernel,
                "10.80.0.0/20",
                count as u32 - 1,
            );
            service
                .apply_testbed(
                    &Caller::internal(),
                    rhyzome_api::testbed::TestbedApply {
                        file,
                        dry_run: None,
                        kernel_files: None,
                    },
                )
                .await?;
            while !service.converge_testbed("bench").await? {}
            ids.extend(service.list(&Caller::internal())?.into_iter().map(|i| i.id));
        } else {
            for i in 0..count {
                let spec = InstanceSpec {
                    name: format!("bench-{i:04}"),
                    kernel: kernel.clone(),
                    ..Default::default()
                };
                ids.push(service.create(spec, &Caller::internal()).await?.id);
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let n = i as u64 + 1;
            backend.set_counters(
                id,
                DomainCounters {
                    cpu_time_ns: n * 1_000_000_007,
                    memory_kib: 32768,
                    max_memory_kib: 32768,
                    vcpus: 1,
                    interfaces: vec![InterfaceCounters {
                        target_device: format!("vnet{i}"),
                        rx_bytes: n * 1_000_003,
                        rx_packets: n * 1009,
                        tx_bytes: n * 2_000_003,
                        tx_packets: n * 2003,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, rhyzomesrv::http::router(service)).await;
        });
        anyhow::Ok(addr)
    })?;

    let client = reqwest::blocking::Client::new();
    let url = format!("http://{addr}/metrics");
    let mut times = Vec::with_capacity(scrapes);
    let mut bytes = 0;
    for _ in 0..scrapes {
        let started = Instant::now();
        let body = client.get(&url).send()?.error_for_status()?.bytes()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        bytes = body.len();
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "instances={count}{} scrapes={scrapes} bytes={bytes} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        if as_testbed { " (one test bed)" } else { "" },
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
