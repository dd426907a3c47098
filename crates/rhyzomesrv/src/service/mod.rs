//! The instance service: what the API does, independent of HTTP.
//!
//! Every mutation is first written to the [`Store`] (desired state), then carried out on the
//! [`Hypervisor`], then the observed outcome is recorded. If the daemon dies in between, the
//! reconciler ([`reconcile`]) finishes or undoes the work on the next start.
//!
//! Concurrency: the service is shared (`Arc`) by all request handlers and the reconciler.
//! Operations on one instance are serialised by a per-name async lock ([`locks::NameLocks`]);
//! different instances proceed in parallel. Blocking work (libvirt calls, file copies) runs
//! on tokio's blocking pool. Kernel imports and blob garbage collection exclude each other
//! through `blob_gc`, so a collection never removes a blob a create is about to reference.

pub mod locks;
pub mod reconcile;

use crate::backend::{self, BackendError, Hypervisor};
use crate::config::Config;
use crate::console;
use crate::domain_xml::{self, DomainDefinition, Nic};
use crate::kernels::{KernelError, KernelStore};
use crate::store::{Desired, InstanceRecord, Observed, Store, StoreError};
use rhyzome_api::validate::{self, FieldError};
use rhyzome_api::{
    Instance, InstanceSpec, InstanceState, NetworkAttachment, NetworkMode, ServerInfo,
    DEFAULT_MEMORY_MIB, DEFAULT_VCPUS,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("instance {0:?} not found")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        field: Option<&'static str>,
        message: String,
    },
    #[error("kernel: {0}")]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Backend(BackendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub struct Service {
    config: Config,
    domain_type: &'static str,
    store: Store,
    backend: Arc<dyn Hypervisor>,
    kernels: Arc<KernelStore>,
    locks: locks::NameLocks,
    blob_gc: tokio::sync::RwLock<()>,
}

/// Runs blocking work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A locally administered unicast MAC derived from the name, so that a re-created instance
/// keeps its MAC (and its neighbours' ARP caches stay right).
pub fn mac_for_name(name: &str) -> String {
    let digest = Sha256::digest(format!("rhyzome-mac:{name}").as_bytes());
    let mut mac = [0u8; 6];
    mac[0] = 0x02;
    mac[1..].copy_from_slice(&digest[..5]);
    validate::format_mac(mac)
}

impl Service {
    pub fn new(
        config: Config,
        domain_type: &'static str,
        store: Store,
        backend: Arc<dyn Hypervisor>,
    ) -> Arc<Service> {
        let kernels = Arc::new(KernelStore::new(
            config.kernel_dirs.clone(),
            config.state_dir.join("blobs"),
        ));
        Arc::new(Service {
            config,
            domain_type,
            store,
            backend,
            kernels,
            locks: locks::NameLocks::default(),
            blob_gc: tokio::sync::RwLock::new(()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn info(&self) -> ServerInfo {
        ServerInfo {
            hostname: self.config.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            domain_type: self.domain_type.to_string(),
            libvirt_uri: self.backend.uri(),
            default_bridge: self.config.bridge_interface.clone(),
        }
    }

    fn to_api(&self, r: &InstanceRecord) -> Instance {
        Instance {
            id: r.id.clone(),
            name: r.name.clone(),
            domain_name: backend::domain_name(&r.name),
            kernel: r.kernel.clone(),
            kernel_sha256: r.kernel_sha256.clone(),
            kernel_parameters: r.kernel_parameters.clone(),
            memory_mib: r.memory_mib,
            vcpus: r.vcpus,
            network: match (&r.bridge, &r.mac) {
                (Some(bridge), Some(mac)) => Some(NetworkAttachment {
                    bridge: bridge.clone(),
                    mac: mac.clone(),
                    ipv4: validate::ipv4_from_parameters(&r.kernel_parameters),
                }),
                _ => None,
            },
            state: r.state,
            desired_state: r.desired.to_api(),
            exit_code: r.exit_code,
            last_error: r.last_error.clone(),
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone(),
        }
    }

    fn definition(&self, r: &InstanceRecord) -> DomainDefinition {
        DomainDefinition {
            domain_type: self.domain_type,
            domain_name: backend::domain_name(&r.name),
            uuid: r.id.clone(),
            instance_name: r.name.clone(),
            hostname: self.config.hostname.clone(),
            memory_mib: r.memory_mib,
            vcpus: r.vcpus,
            kernel: self.kernels.blob_path(&r.kernel_sha256),
            cmdline: r.kernel_parameters.clone(),
            nic: match (&r.bridge, &r.mac) {
                (Some(bridge), Some(mac)) => Some(Nic {
                    bridge: bridge.clone(),
                    mac: mac.clone(),
                }),
                _ => None,
            },
            console_log: console::log_path(&self.config.state_dir, &r.id),
        }
    }

    /// Checks a spec and fills in defaults; touches nothing.
    fn validate_spec(&self, spec: &InstanceSpec) -> Result<ValidSpec, FieldError> {
        validate::validate_name(&spec.name)?;
        validate::validate_kernel_parameters(&spec.kernel_parameters)?;
        let memory_mib = spec.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
        validate::validate_memory_mib(memory_mib)?;
        let vcpus = spec.vcpus.unwrap_or(DEFAULT_VCPUS);
        validate::validate_vcpus(vcpus)?;
        if spec.kernel.is_empty() {
            return Err(FieldError::new("kernel", "must not be empty"));
        }
        let network = spec.network.clone().unwrap_or(rhyzome_api::NetworkSpec {
            mode: NetworkMode::Bridge,
            bridge: None,
            mac: None,
        });
        let (bridge, mac) = match network.mode {
            NetworkMode::None => {
                if network.bridge.is_some() || network.mac.is_some() {
                    return Err(FieldError::new(
                        "network.mode",
                        "is \"none\", so network.bridge and network.mac must not be set",
                    ));
                }
                (None, None)
            }
            NetworkMode::Bridge => {
                let bridge = network
                    .bridge
                    .unwrap_or_else(|| self.config.bridge_interface.clone());
                validate::validate_bridge(&bridge)?;
                let mac = match network.mac {
                    Some(m) => validate::format_mac(validate::parse_mac(&m)?),
                    None => mac_for_name(&spec.name),
                };
                (Some(bridge), Some(mac))
            }
        };
        Ok(ValidSpec {
            memory_mib,
            vcpus,
            bridge,
            mac,
        })
    }

    pub async fn create(&self, spec: InstanceSpec) -> Result<Instance, ServiceError> {
        let valid = self.validate_spec(&spec)?;
        let _guard = self.locks.lock(&spec.name).await;
        if let Some(existing) = self.store.by_name(&spec.name)? {
            return Err(name_taken(&existing));
        }
        let gc_guard = self.blob_gc.read().await;
        let requested = spec.kernel.clone();
        let kernels = self.kernels.clone();
        let kernel = blocking(move || kernels.import(&requested)).await??;
        let record = InstanceRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            kernel: spec.kernel.clone(),
            kernel_sha256: kernel.sha256,
            kernel_parameters: spec.kernel_parameters.clone(),
            memory_mib: valid.memory_mib,
            vcpus: valid.vcpus,
            bridge: valid.bridge,
            mac: valid.mac,
            desired: Desired::Running,
            state: InstanceState::Pending,
            exit_code: None,
            last_error: None,
            created_at: now_rfc3339(),
            started_at: None,
            console_offset: 0,
        };
        match self.store.insert(&record) {
            Ok(()) => {}
            Err(StoreError::NameTaken(name)) => {
                return Err(ServiceError::Conflict {
                    field: Some("name"),
                    message: format!("an instance named {name:?} already exists"),
                })
            }
            Err(StoreError::MacTaken(mac)) => {
                return Err(ServiceError::Conflict {
                    field: Some("network.mac"),
                    message: format!("{mac} is already used by another instance"),
                })
            }
            Err(e) => return Err(e.into()),
        }
        drop(gc_guard);
        tracing::info!(instance = %record.name, id = %record.id, "instance accepted");
        match self.start_domain(&record).await {
            Ok(()) => {}
            Err(e) => {
                // A create that cannot start leaves nothing behind: the client sees the error
                // and may fix the request and try again under the same name.
                tracing::warn!(instance = %record.name, error = %e, "create failed; rolling back");
                self.forget(&record).await?;
                return Err(self.explain_start_error(&record, e));
            }
        }
        self.get_record(&record.name).map(|r| self.to_api(&r))
    }

    /// Turns libvirt's refusal to start a guest into an error that names the request field.
    fn explain_start_error(&self, r: &InstanceRecord, e: ServiceError) -> ServiceError {
        if let (ServiceError::Backend(BackendError::Rejected { message }), Some(bridge)) =
            (&e, &r.bridge)
        {
            if message.contains(&format!("'{bridge}'")) || message.contains("No such device") {
                return ServiceError::Invalid(FieldError::new(
                    "network.bridge",
                    format!("bridge {bridge:?} cannot be used on the server: {message}"),
                ));
            }
        }
        e
    }

    /// Starts the domain of `r` and records the outcome. The caller holds the name lock.
    async fn start_domain(&self, r: &InstanceRecord) -> Result<(), ServiceError> {
        let def = self.definition(r);
        let xml = domain_xml::render(&def).map_err(|e| ServiceError::Internal(e.to_string()))?;
        if let Some(parent) = def.console_log.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ServiceError::Internal(format!("{}: {e}", parent.display())))?;
        }
        let offset = console::log_len(&def.console_log);
        self.store.set_started(&r.id, &now_rfc3339(), offset)?;
        let backend = self.backend.clone();
        let started = std::time::Instant::now();
        match blocking(move || backend.create(&def, &xml)).await? {
            Ok(()) => {
                tracing::info!(instance = %r.name, elapsed_ms = started.elapsed().as_millis() as u64, "domain started");
                self.store.set_observed(
                    &r.id,
                    &Observed {
                        state: InstanceState::Running,
                        exit_code: None,
                        last_error: None,
                    },
                )?;
                Ok(())
            }
            Err(e) => {
                self.store.set_observed(
                    &r.id,
                    &Observed {
                        state: InstanceState::Failed,
                        exit_code: None,
                        last_error: Some(e.to_string()),
                    },
                )?;
                Err(ServiceError::Backend(e))
            }
        }
    }

    async fn destroy_domain(&self, r: &InstanceRecord) -> Result<(), ServiceError> {
        let backend = self.backend.clone();
        let id = r.id.clone();
        blocking(move || backend.destroy(&id))
            .await?
            .map_err(ServiceError::Backend)?;
        Ok(())
    }

    /// Removes an instance's domain, console and record. The caller holds the name lock.
    async fn forget(&self, r: &InstanceRecord) -> Result<(), ServiceError> {
        self.store.set_desired(&r.id, Desired::Deleted)?;
        self.destroy_domain(r).await?;
        let log = console::log_path(&self.config.state_dir, &r.id);
        if let Err(e) = std::fs::remove_file(&log) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %log.display(), error = %e, "cannot remove console log");
            }
        }
        self.store.remove(&r.id)?;
        self.collect_garbage().await;
        Ok(())
    }

    /// Removes kernel blobs that no instance uses any more.
    async fn collect_garbage(&self) {
        let _gc = self.blob_gc.write().await;
        let referenced = match self.store.referenced_kernels() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list referenced kernels");
                return;
            }
        };
        match self.kernels.collect_garbage(&referenced) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed unused kernel blobs"),
            Err(e) => tracing::warn!(error = %e, "kernel blob garbage collection failed"),
        }
    }

    fn get_record(&self, name: &str) -> Result<InstanceRecord, ServiceError> {
        match self.store.by_name(name)? {
            Some(r) if r.desired != Desired::Deleted => Ok(r),
            _ => Err(ServiceError::NotFound(name.to_string())),
        }
    }

    pub fn list(&self) -> Result<Vec<Instance>, ServiceError> {
        Ok(self
            .store
            .visible()?
            .iter()
            .map(|r| self.to_api(r))
            .collect())
    }

    pub fn get(&self, name: &str) -> Result<Instance, ServiceError> {
        self.get_record(name).map(|r| self.to_api(&r))
    }

    pub async fn delete(&self, name: &str) -> Result<(), ServiceError> {
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        self.forget(&r).await?;
        tracing::info!(instance = %name, "instance deleted");
        Ok(())
    }

    pub async fn start(&self, name: &str) -> Result<Instance, ServiceError> {
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        self.store.set_desired(&r.id, Desired::Running)?;
        let backend = self.backend.clone();
        let id = r.id.clone();
        let running = blocking(move || backend.status(&id))
            .await?
            .map_err(ServiceError::Backend)?
            .is_some_and(|d| d.active);
        if !running {
            self.start_domain(&r).await?;
        }
        self.get(name)
    }

    pub async fn stop(&self, name: &str) -> Result<Instance, ServiceError> {
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        self.store.set_desired(&r.id, Desired::Stopped)?;
        self.destroy_domain(&r).await?;
        self.store.set_observed(
            &r.id,
            &Observed {
                state: InstanceState::Stopped,
                exit_code: None,
                last_error: None,
            },
        )?;
        tracing::info!(instance = %name, "instance stopped");
        self.get(name)
    }

    pub async fn restart(&self, name: &str) -> Result<Instance, ServiceError> {
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        self.store.set_desired(&r.id, Desired::Running)?;
        self.destroy_domain(&r).await?;
        self.start_domain(&r).await?;
        tracing::info!(instance = %name, "instance restarted");
        self.get(name)
    }

    /// The console output of every run so far, at most the last `tail_bytes` bytes.
    pub async fn console(
        &self,
        name: &str,
        tail_bytes: Option<u64>,
    ) -> Result<Vec<u8>, ServiceError> {
        let r = self.get_record(name)?;
        let path = console::log_path(&self.config.state_dir, &r.id);
        let limit = tail_bytes
            .unwrap_or(console::MAX_CONSOLE_READ)
            .min(console::MAX_CONSOLE_READ);
        blocking(move || console::read_from(&path, 0, limit))
            .await?
            .map_err(|e| ServiceError::Internal(format!("cannot read console log: {e}")))
    }
}

struct ValidSpec {
    memory_mib: u32,
    vcpus: u32,
    bridge: Option<String>,
    mac: Option<String>,
}

fn name_taken(existing: &InstanceRecord) -> ServiceError {
    let message = if existing.desired == Desired::Deleted {
        format!(
            "an instance named {:?} is being deleted; try again in a moment",
            existing.name
        )
    } else {
        format!("an instance named {:?} already exists", existing.name)
    };
    ServiceError::Conflict {
        field: Some("name"),
        message,
    }
}

#[cfg(test)]
mod tests;
