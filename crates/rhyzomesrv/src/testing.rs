//! Support for tests and benchmarks: a complete daemon (configuration, store, service, HTTP
//! API on the real server loop) over the fake hypervisor, in a temporary directory, served on
//! a loopback port by a runtime of its own. It lets tests of the API, the CLI and the
//! benchmarks share one set-up instead of each building its own.
//!
//! Not for production use: the kernel it offers is four bytes of ELF magic.

use crate::auth::tokens::TokenStore;
use crate::backend::fake::FakeBackend;
use crate::config::Config;
use crate::http::auth::Authenticator;
use crate::http::server::{serve, Listeners, ServeOptions};
use crate::service::Service;
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to serve.
pub struct TestServerOptions {
    /// Configuration keys on top of the defaults (`BridgeInterface` `br0`, a temporary
    /// `StateDir`, `KernelDirs` with one fake kernel).
    pub config: serde_json::Value,
    /// Serve with tokens, rate limits and the audit log, as the daemon does.
    pub auth: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub header_timeout: Duration,
    /// Serve on a local socket too, at `TestServer::socket`.
    pub local_socket: bool,
}

impl Default for TestServerOptions {
    fn default() -> Self {
        TestServerOptions {
            config: serde_json::json!({}),
            auth: false,
            tls: None,
            header_timeout: Duration::from_secs(10),
            local_socket: false,
        }
    }
}

pub struct TestServer {
    /// `http://127.0.0.1:PORT` (or `https://`).
    pub url: String,
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    /// Absolute path of a fake kernel inside `KernelDirs`.
    pub kernel: String,
    pub backend: Arc<FakeBackend>,
    pub service: Arc<Service>,
    /// The local socket, when [`TestServerOptions::local_socket`] asked for one.
    pub socket: Option<PathBuf>,
    runtime: tokio::runtime::Runtime,
}

/// A temporary directory with `kernels/k.virtio` and the configuration for it.
pub fn fake_setup(extra: &serde_json::Value) -> (tempfile::TempDir, Config, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kernels = dir.path().join("kernels");
    std::fs::create_dir(&kernels).expect("create kernels/");
    let kernel = kernels.join("k.virtio");
    std::fs::write(&kernel, b"\x7fELF not really a kernel").expect("write the fake kernel");
    let mut settings = serde_json::json!({
        "BridgeInterface": "br0",
        "StateDir": dir.path().join("state"),
        "KernelDirs": [kernels],
    });
    for (k, v) in extra.as_object().expect("extra settings are an object") {
        settings[k] = v.clone();
    }
    let config =
        Config::parse(&settings.to_string(), Path::new("test.conf")).expect("a valid config");
    let kernel = kernel.to_str().expect("UTF-8 temp path").to_string();
    (dir, config, kernel)
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(TestServerOptions::default())
    }

    pub fn start_with(opts: TestServerOptions) -> TestServer {
        let (dir, config, kernel) = fake_setup(&opts.config);
        let state_dir = config.state_dir.clone();
        let backend = Arc::new(FakeBackend::new());
        let store = Store::open(&state_dir).expect("open the store");
        let service = Service::new(config, "test", store, backend.clone());
        let auth = if opts.auth {
            Authenticator::new(
                TokenStore::open(&state_dir).expect("open the token store"),
                service.config().create_rate_limit,
                service.config().create_burst,
                state_dir.join("audit.log"),
            )
            .expect("open the audit log")
        } else {
            Authenticator::disabled()
        };
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().expect("its address"));
        let socket = opts.local_socket.then(|| dir.path().join("api.sock"));
        // The socket file lives as long as the temporary directory it is in.
        let local = socket.as_ref().map(|path| {
            let _guard = runtime.enter();
            let (listener, file) = crate::http::local_socket::bind(&crate::config::LocalSocket {
                path: path.clone(),
                group: None,
            })
            .expect("bind the local socket");
            std::mem::forget(file);
            listener
        });
        runtime.spawn(serve(
            Listeners {
                tcp: listener,
                local,
            },
            crate::http::router_with_auth(service.clone(), auth),
            ServeOptions {
                tls: opts.tls,
                header_timeout: opts.header_timeout,
                max_connections: 1024,
            },
            std::future::pending(),
        ));
        TestServer {
            url,
            dir,
            state_dir,
            kernel,
            backend,
            service,
            socket,
            runtime,
        }
    }

    /// The token store of this server's state directory.
    pub fn tokens(&self) -> TokenStore {
        TokenStore::open(&self.state_dir).expect("open the token store")
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// Gives instance `name` the console output `old\n`, then, after a returned RFC 3339
    /// time, `new\n`, with the reconciler's size samples on either side (as its periodic pass
    /// takes them), so that `since` at that time selects `new\n` alone.
    pub fn console_output_around_a_time(&self, name: &str) -> String {
        let id = self
            .service
            .get(&crate::auth::Caller::internal(), name)
            .expect("the instance exists")
            .id;
        let log = crate::console::log_path(&self.state_dir, &id);
        let reconcile = || {
            self.runtime
                .block_on(self.service.reconcile_once())
                .expect("a reconciler pass");
        };
        std::fs::write(&log, "old\n").expect("write the console log");
        reconcile();
        std::thread::sleep(Duration::from_millis(20));
        let between = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        std::thread::sleep(Duration::from_millis(20));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open the console log");
        std::io::Write::write_all(&mut file, b"new\n").expect("append to the console log");
        reconcile();
        between
    }
}

/// A test-bed file named `name`: a group `seed` of one instance, then a group `nodes` of
/// `nodes` instances `after` it, all with `kernel`, on the bed's own network `NAME-net` of
/// `subnet`, each given its address (`--ipv4={cidr}`).
pub fn two_group_bed(name: &str, kernel: &str, subnet: &str, nodes: u32) -> String {
    format!(
        r#"name = "{name}"
[[networks]]
name = "{name}-net"
subnet = "{subnet}"

[[groups]]
name = "seed"
count = 1
kernel = "{kernel}"
network = "{name}-net"
kernel_parameters = "--ipv4={{cidr}}"

[[groups]]
name = "nodes"
count = {nodes}
after = ["seed"]
kernel = "{kernel}"
network = "{name}-net"
kernel_parameters = "--ipv4={{cidr}}"
"#
    )
}
