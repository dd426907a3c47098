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
//! through `blob_gc`, so a collection never removes a blob a create is about to reference;
//! a create refused after its kernel was copied runs a collection before it answers, so a
//! refusal leaves no blob behind.
//! Every state change is numbered and kept in a bounded log ([`Service::events`]) for
//! `GET /v1/events`; lifecycle notices from the hypervisor and due restarts wake the
//! reconciler through an unbounded channel.

pub mod authz;
pub mod event_log;
pub mod images;
pub mod locks;
pub mod ownership;
pub mod reconcile;
pub mod restart;
pub mod volumes;

use crate::auth::Caller;
use crate::backend::{self, BackendError, Hypervisor, InterfaceKind, Notice};
use crate::config::Config;
use crate::console;
use crate::domain_xml::{self, DomainDefinition, Nic};
use crate::kernels::{KernelError, KernelStore};
use crate::store::{Desired, InstanceRecord, Observed, Store, StoreError};
use authz::{authorize, Action};
use rhyzome_api::validate::{self, FieldError};
use rhyzome_api::{
    Event, Instance, InstanceSpec, InstanceState, NetworkAttachment, NetworkMode, RestartPolicy,
    ServerInfo, DEFAULT_MEMORY_MIB, DEFAULT_VCPUS,
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
    /// A kernel path a non-admin may not learn about (outside `KernelDirs`, missing or
    /// unreadable); the detail is for the audit log only.
    #[error("kernel: {0}")]
    KernelPathRefused(KernelError),
    #[error(transparent)]
    Backend(BackendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub struct Service {
    config: Config,
    domain_type: &'static str,
    /// This daemon's identity, from its store; it marks every domain the daemon creates.
    daemon_id: String,
    store: Store,
    backend: Arc<dyn Hypervisor>,
    kernels: Arc<KernelStore>,
    images: Arc<crate::images::ImageFiles>,
    locks: locks::NameLocks,
    blob_gc: tokio::sync::RwLock<()>,
    events: event_log::EventLog,
    /// The serialised full listing and the store generation it was made at: a test bed polls
    /// `GET /v1/instances` often, and between writes the answer does not change.
    list_cache: std::sync::Mutex<Option<(u64, bytes::Bytes)>>,
    /// Console growth history per instance id, for `since` (see [`console::SizeIndex`]).
    console_index: std::sync::Mutex<std::collections::HashMap<String, console::SizeIndex>>,
    /// The Solo5 manifest of each kernel blob (`None`: it has none), by SHA-256, for the
    /// `devices` of an instance.
    manifests:
        std::sync::Mutex<std::collections::HashMap<String, Option<rhyzome_api::Solo5Manifest>>>,
    wake: tokio::sync::mpsc::UnboundedSender<()>,
    /// The daemon's own destroys, to tell them from someone else's (see [`ownership`]).
    destroys: Arc<ownership::Destroys>,
    /// Domains no instance claims that a pass has already looked at and left alone (another
    /// daemon's, an older release's, another tool's): UUIDs are never reused, so they need
    /// not be looked at (nor logged) again.
    left_alone: std::sync::Mutex<std::collections::HashSet<String>>,
    wake_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<()>>>,
    /// The name of the storage pool volumes live in, once it was made or found.
    volume_pool: tokio::sync::OnceCell<String>,
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
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms_to_rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// How long ago an RFC 3339 time was (zero if unparsable or in the future).
fn elapsed_since(rfc3339: Option<&str>) -> std::time::Duration {
    rfc3339
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// A locally administered unicast MAC derived from the name, so that a re-created instance
/// keeps its MAC (and its neighbours' ARP caches stay right): `02` followed by the first
/// five bytes of SHA-256 of `rhyzome-mac:` and the name. The NICs of a multi-NIC instance
/// use the name `INSTANCE/DEVICE`.
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
        let images = Arc::new(crate::images::ImageFiles::new(
            &config.state_dir,
            config.state_dir.join("blobs"),
            config.max_image_bytes,
        ));
        images.clean_uploads();
        let (wake, wake_rx) = tokio::sync::mpsc::unbounded_channel();
        let sink_wake = wake.clone();
        let destroys = Arc::new(ownership::Destroys::default());
        let sink_destroys = destroys.clone();
        let watched = backend.watch(Arc::new(move |notice: Notice| {
            tracing::debug!(?notice, "hypervisor notice");
            if let Notice::Lifecycle {
                uuid,
                event,
                detail,
            } = &notice
            {
                if event == "stopped" && detail == "destroyed" {
                    sink_destroys.destroyed(uuid);
                }
            }
            let _ = sink_wake.send(());
        }));
        if let Err(e) = watched {
            tracing::warn!(error = %e, "no lifecycle events from the hypervisor; relying on polling");
        }
        let daemon_id = store.daemon_id().to_string();
        tracing::info!(daemon = %daemon_id, hostname = %config.hostname, "daemon identity");
        Arc::new(Service {
            config,
            domain_type,
            daemon_id,
            store,
            backend,
            kernels,
            images,
            locks: locks::NameLocks::default(),
            blob_gc: tokio::sync::RwLock::new(()),
            events: event_log::EventLog::default(),
            list_cache: std::sync::Mutex::new(None),
            console_index: Default::default(),
            manifests: Default::default(),
            wake,
            destroys,
            left_alone: Default::default(),
            wake_rx: std::sync::Mutex::new(Some(wake_rx)),
            volume_pool: tokio::sync::OnceCell::new(),
        })
    }

    /// The recent state changes, and the way to wait for the next.
    pub fn events(&self) -> &event_log::EventLog {
        &self.events
    }

    /// The next item of `cursor` that `caller` may see: events of instances outside its
    /// prefix are skipped.
    pub async fn next_event(
        &self,
        caller: &Caller,
        cursor: &mut event_log::Cursor,
    ) -> event_log::Item {
        loop {
            match self.events.next(cursor).await {
                event_log::Item::Event { event, .. }
                    if authorize(caller, Action::ReadInstance(&event.instance)).is_err() =>
                {
                    continue
                }
                item => return item,
            }
        }
    }

    fn publish(
        &self,
        r: &InstanceRecord,
        state: &str,
        exit_code: Option<i32>,
        reason: Option<String>,
    ) {
        self.events.publish(Event {
            time: now_rfc3339(),
            instance: r.name.clone(),
            state: state.to_string(),
            exit_code,
            reason,
            restart_count: r.restart_count,
        });
    }

    /// Records an observed state and announces it.
    fn observe(
        &self,
        r: &InstanceRecord,
        state: InstanceState,
        exit_code: Option<i32>,
        last_error: Option<String>,
    ) -> Result<(), ServiceError> {
        self.store.set_observed(
            &r.id,
            &Observed {
                state,
                exit_code,
                last_error: last_error.clone(),
            },
            &now_rfc3339(),
        )?;
        self.publish(r, state.as_str(), exit_code, last_error);
        Ok(())
    }

    fn backoff(&self) -> restart::Backoff {
        restart::Backoff {
            initial: self.config.restart_backoff,
            max: self.config.restart_backoff_max,
            stable_after: self.config.restart_stable,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn info(&self) -> ServerInfo {
        ServerInfo {
            hostname: self.config.hostname.clone(),
            daemon_id: self.daemon_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            domain_type: self.domain_type.to_string(),
            libvirt_uri: self.backend.uri(),
            default_bridge: self.config.bridge_interface.clone(),
        }
    }

    fn to_api(&self, r: &InstanceRecord) -> Instance {
        let image = self.store.instance_image(&r.id).ok().flatten();
        let nics = self.store.instance_nics(&r.id).unwrap_or_default();
        self.to_api_with(r, image, nics)
    }

    fn to_api_with(
        &self,
        r: &InstanceRecord,
        image: Option<String>,
        nics: Vec<crate::store::images::NicRow>,
    ) -> Instance {
        let devices = self.devices_of(r, &nics);
        Instance {
            id: r.id.clone(),
            name: r.name.clone(),
            domain_name: backend::domain_name(&r.name),
            kernel: r.kernel.clone(),
            kernel_sha256: r.kernel_sha256.clone(),
            image,
            interfaces: nics
                .into_iter()
                .map(|n| rhyzome_api::InterfaceAttachment {
                    device: n.device,
                    bridge: n.bridge,
                    mac: n.mac,
                    pci_slot: n.pci_slot,
                })
                .collect(),
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
            devices,
            state: r.state,
            desired_state: r.desired.to_api(),
            exit_code: r.exit_code,
            last_error: r.last_error.clone(),
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone(),
            state_changed_at: r.state_changed_at.clone(),
            restart: r.restart.clone(),
            restart_count: r.restart_count,
            next_restart_at: r.next_restart_at_ms.map(ms_to_rfc3339),
            startup_priority: r.startup_priority,
            autostart: r.autostart,
            owner: r.owner.clone(),
        }
    }

    fn definition(&self, r: &InstanceRecord) -> Result<DomainDefinition, ServiceError> {
        // A store error must not quietly yield a guest with fewer NICs than its image needs.
        let nics = self.store.instance_nics(&r.id)?;
        Ok(DomainDefinition {
            domain_type: self.domain_type,
            domain_name: backend::domain_name(&r.name),
            uuid: r.id.clone(),
            instance_name: r.name.clone(),
            hostname: self.config.hostname.clone(),
            daemon_id: self.daemon_id.clone(),
            memory_mib: r.memory_mib,
            vcpus: r.vcpus,
            kernel: self.kernels.blob_path(&r.kernel_sha256),
            cmdline: r.kernel_parameters.clone(),
            nic: match (&r.bridge, &r.mac) {
                (Some(bridge), Some(mac)) => Some(Nic {
                    bridge: bridge.clone(),
                    mac: mac.clone(),
                    pci_slot: None,
                }),
                _ => None,
            },
            console_log: console::log_path(&self.config.state_dir, &r.id),
            // An image with several network devices: every NIC at a fixed slot, in manifest
            // order (then `nic` is not used).
            nics: nics
                .into_iter()
                .map(|n| Nic {
                    bridge: n.bridge,
                    mac: n.mac,
                    pci_slot: Some(n.pci_slot),
                })
                .collect(),
        })
    }

    /// Checks a spec and fills in defaults; touches nothing.
    fn validate_spec(&self, spec: &InstanceSpec) -> Result<ValidSpec, FieldError> {
        validate::validate_name(&spec.name)?;
        validate::validate_kernel_parameters(&spec.kernel_parameters)?;
        let memory_mib = spec.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
        validate::validate_memory_mib(memory_mib)?;
        let vcpus = spec.vcpus.unwrap_or(DEFAULT_VCPUS);
        validate::validate_vcpus(vcpus)?;
        if spec.kernel.is_empty() && spec.image.is_none() {
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
        let restart = spec.restart.clone().unwrap_or_default();
        validate::validate_restart_policy(&restart)?;
        Ok(ValidSpec {
            memory_mib,
            vcpus,
            bridge,
            mac,
            restart,
        })
    }

    /// Creates an instance for `caller`, within its role, name prefix and quota.
    pub async fn create(
        &self,
        spec: InstanceSpec,
        caller: &Caller,
    ) -> Result<Instance, ServiceError> {
        authorize(caller, Action::CreateInstances)?;
        let valid = self.validate_spec(&spec)?;
        caller.may_name(&spec.name)?;
        // Quota check and insert must not interleave with another create of the same owner,
        // or two creates could each see room for one more. Names cannot contain ':', so the
        // owner's lock never collides with an instance's.
        let owner_guard = self.locks.lock(&format!("owner:{}", caller.name)).await;
        // Bridges are checked once the NICs are planned: an image may declare several.
        caller.check_quota(valid.memory_mib, None, self.store.usage_of(&caller.name)?)?;
        let _guard = self.locks.lock(&spec.name).await;
        if let Some(existing) = self.store.by_name(&spec.name)? {
            return Err(name_taken(&existing));
        }
        let gc_guard = self.blob_gc.read().await;
        let recorded = self.record_instance(&spec, valid, caller).await;
        drop(gc_guard);
        let (record, nics) = match recorded {
            Ok(recorded) => recorded,
            Err(e) => {
                // The kernel may have been copied into the blob store already; a refused
                // create leaves nothing behind.
                self.collect_garbage().await;
                return Err(e);
            }
        };
        // The record now counts against the quota; starting the guest (the slow part) need
        // not hold up the owner's other creates.
        drop(owner_guard);
        tracing::info!(instance = %record.name, id = %record.id, "instance accepted");
        match self.start_domain(&record).await {
            Ok(()) => {}
            Err(e) => {
                // A create that cannot start leaves nothing behind: the client sees the error
                // and may fix the request and try again under the same name.
                tracing::warn!(instance = %record.name, error = %e, "create failed; rolling back");
                let e = self.explain_start_error(&record, &nics, e);
                self.forget(&record).await?;
                return Err(e);
            }
        }
        self.get_record(&record.name).map(|r| self.to_api(&r))
    }

    /// Resolves what `spec` boots (copying a kernel into the blob store), plans its devices,
    /// checks its bridges against `caller`'s quota and the libvirt host, and inserts its
    /// record. The caller holds the owner and name locks and a read guard on blob collection.
    async fn record_instance(
        &self,
        spec: &InstanceSpec,
        valid: ValidSpec,
        caller: &Caller,
    ) -> Result<(InstanceRecord, Vec<crate::store::images::NicRow>), ServiceError> {
        let boot = self.resolve_boot(spec, caller).await?;
        let (nics, bridge, mac) =
            self.plan_devices(spec, &boot, valid.bridge, valid.mac, caller)?;
        self.check_bridges(bridge_attachments(bridge.as_deref(), &nics))
            .await?;
        let record = InstanceRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            kernel: spec.kernel.clone(),
            kernel_sha256: boot.sha256,
            kernel_parameters: spec.kernel_parameters.clone(),
            memory_mib: valid.memory_mib,
            vcpus: valid.vcpus,
            bridge,
            mac,
            desired: Desired::Running,
            state: InstanceState::Pending,
            exit_code: None,
            last_error: None,
            created_at: now_rfc3339(),
            started_at: None,
            console_offset: 0,
            console_inode: None,
            state_changed_at: now_rfc3339(),
            restart: valid.restart,
            restart_count: 0,
            next_restart_at_ms: None,
            startup_priority: spec.startup_priority.unwrap_or(0),
            autostart: spec.autostart.unwrap_or(false),
            owner: caller.name.clone(),
        };
        self.remember_manifest(&record.kernel_sha256, &boot.inspection);
        match self
            .store
            .insert_with_boot(&record, boot.image.as_deref(), &nics)
        {
            Ok(()) => Ok((record, nics)),
            Err(StoreError::NameTaken(name)) => Err(ServiceError::Conflict {
                field: Some("name"),
                message: format!("an instance named {name:?} already exists"),
            }),
            Err(StoreError::MacTaken(mac)) => Err(ServiceError::Conflict {
                field: Some("network.mac"),
                message: format!("{mac} is already used by another instance"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The devices of a create: the NICs of a multi-NIC image, or the single NIC (bridge and
    /// MAC) of `network`, or none when the image's Solo5 manifest declares no network device.
    /// Refuses what the manifest rules out, and bridges the caller may not use.
    #[allow(clippy::type_complexity)]
    fn plan_devices(
        &self,
        spec: &InstanceSpec,
        boot: &images::Boot,
        bridge: Option<String>,
        mac: Option<String>,
        caller: &Caller,
    ) -> Result<
        (
            Vec<crate::store::images::NicRow>,
            Option<String>,
            Option<String>,
        ),
        ServiceError,
    > {
        let manifest = images::manifest_of(&boot.inspection);
        if let Some(m) = manifest {
            let (field, what) = match &boot.image {
                Some(reference) => ("image", reference.as_str()),
                None => ("kernel", spec.kernel.as_str()),
            };
            Self::check_manifest(spec, m, field, what)?;
        }
        let nics = self.plan_nics(spec, &boot.inspection)?;
        for nic in &nics {
            caller.check_bridge(&nic.bridge, "nets")?;
        }
        let (bridge, mac) = match nics.first() {
            Some(first) => (Some(first.bridge.clone()), Some(first.mac.clone())),
            None if manifest.is_some_and(|m| m.net_devices().is_empty()) => (None, None),
            None => {
                if let Some(bridge) = &bridge {
                    caller.check_bridge(bridge, "network.bridge")?;
                }
                (bridge, mac)
            }
        };
        Ok((nics, bridge, mac))
    }

    /// Keeps what the manifest of blob `sha256` says, for [`Self::devices_of`]. Blobs are
    /// content-addressed, so the entry never goes stale.
    fn remember_manifest(&self, sha256: &str, inspection: &rhyzome_api::ImageInspection) {
        let manifest = images::manifest_of(inspection).cloned();
        self.manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha256.to_string(), manifest);
    }

    /// The Solo5 manifest of blob `sha256` (`Ok(None)`: it has none), inspected once per
    /// daemon run.
    fn manifest_of_blob(
        &self,
        sha256: &str,
    ) -> Result<Option<rhyzome_api::Solo5Manifest>, crate::images::inspect::InspectError> {
        if let Some(m) = self
            .manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sha256)
        {
            return Ok(m.clone());
        }
        let file = std::fs::File::open(self.kernels.blob_path(sha256))?;
        let inspection = crate::images::inspect::inspect(&file)?;
        self.remember_manifest(sha256, &inspection);
        Ok(images::manifest_of(&inspection).cloned())
    }

    /// Which devices `r` got and why; `None` (with a warning) when its blob cannot be read.
    fn devices_of(
        &self,
        r: &InstanceRecord,
        nics: &[crate::store::images::NicRow],
    ) -> Option<rhyzome_api::DeviceSelection> {
        let manifest = match self.manifest_of_blob(&r.kernel_sha256) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(instance = %r.name, error = %e, "cannot inspect the kernel blob");
                return None;
            }
        };
        let names: Vec<String> = match (nics, &r.bridge) {
            ([], Some(bridge)) => vec![bridge.clone()],
            ([], None) => Vec::new(),
            (nics, _) => nics.iter().map(|n| n.device.clone()).collect(),
        };
        Some(images::device_selection(manifest.as_ref(), &names))
    }

    /// Asks the hypervisor's host whether each bridge exists and is a bridge, so that a wrong
    /// one is a 422 naming its field rather than libvirt failing to start the guest (for `lo`
    /// it says only "Cannot set interface MTU on 'vnetN'"). libvirt answers for the network
    /// namespace it runs in, which need not be the daemon's. When it cannot say, the start is
    /// the check, and [`Self::explain_start_error`] names the field.
    async fn check_bridges(&self, attachments: Vec<(String, String)>) -> Result<(), ServiceError> {
        let backend = self.backend.clone();
        blocking(move || {
            for (field, bridge) in attachments {
                let problem = match backend
                    .interface_kind(&bridge)
                    .map_err(ServiceError::Backend)?
                {
                    InterfaceKind::Bridge | InterfaceKind::Unknown => continue,
                    InterfaceKind::Missing => "does not exist on the libvirt host".to_string(),
                    InterfaceKind::Other(kind) => {
                        format!("is not a bridge on the libvirt host (it is a {kind} interface)")
                    }
                };
                return Err(FieldError::new(field, format!("{bridge:?} {problem}")).into());
            }
            Ok(())
        })
        .await?
    }

    /// Turns libvirt's refusal to start a guest into an error that names the request field
    /// when the request is at fault: the bridge libvirt names (`Cannot get interface MTU on
    /// 'br9'`), or the only bridge when it names none. `nics` are the planned NICs of a
    /// multi-NIC image (empty otherwise). A domain name held by someone else is already a 409
    /// from [`Self::start_domain`].
    fn explain_start_error(
        &self,
        r: &InstanceRecord,
        nics: &[crate::store::images::NicRow],
        e: ServiceError,
    ) -> ServiceError {
        let ServiceError::Backend(BackendError::Rejected { message }) = &e else {
            return e;
        };
        let attachments = bridge_attachments(r.bridge.as_deref(), nics);
        let named = attachments
            .iter()
            .find(|(_, bridge)| message.contains(&format!("'{bridge}'")));
        let only =
            (attachments.len() == 1 && message.contains("No such device")).then(|| &attachments[0]);
        match named.or(only) {
            Some((field, bridge)) => ServiceError::Invalid(FieldError::new(
                field.clone(),
                format!("bridge {bridge:?} cannot be used on the server: {message}"),
            )),
            None => e,
        }
    }

    /// Starts the domain of `r` and records the outcome. The caller holds the name lock.
    async fn start_domain(&self, r: &InstanceRecord) -> Result<(), ServiceError> {
        let def = self.definition(r)?;
        let xml = domain_xml::render(&def).map_err(|e| ServiceError::Internal(e.to_string()))?;
        console::prepare_log(&def.console_log)
            .map_err(|e| ServiceError::Internal(format!("{}: {e}", def.console_log.display())))?;
        self.store.set_started(
            &r.id,
            &now_rfc3339(),
            console::log_position(&def.console_log),
        )?;
        self.publish(r, InstanceState::Starting.as_str(), None, None);
        // A new run: how an earlier one ended no longer matters.
        self.destroys.take_outside(&r.id);
        let backend = self.backend.clone();
        let started = std::time::Instant::now();
        let domain_name = def.domain_name.clone();
        match blocking(move || backend.create(&def, &xml)).await? {
            Ok(()) => {
                tracing::info!(instance = %r.name, elapsed_ms = started.elapsed().as_millis() as u64, "domain started");
                self.observe(r, InstanceState::Running, None, None)
            }
            Err(e) => {
                let e = match &e {
                    BackendError::Rejected { .. } => self
                        .name_held_by_another(r, &domain_name)
                        .await
                        .unwrap_or(ServiceError::Backend(e)),
                    _ => ServiceError::Backend(e),
                };
                self.observe(r, InstanceState::Failed, None, Some(e.to_string()))?;
                Err(e)
            }
        }
    }

    /// After libvirt refused a domain: the 409 to answer when the refusal is that another
    /// domain (another daemon's, or another tool's) already has its name. Domain names are
    /// `rhyzome-<instance>` whichever daemon makes them, so two daemons on one libvirt share
    /// one name space.
    async fn name_held_by_another(
        &self,
        r: &InstanceRecord,
        domain_name: &str,
    ) -> Option<ServiceError> {
        let backend = self.backend.clone();
        let name = domain_name.to_string();
        let (uuid, mark) = match blocking(move || backend.named(&name)).await {
            Ok(Ok(Some(held))) => held,
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => {
                tracing::warn!(domain = %domain_name, error = %e, "cannot find out who holds a domain name");
                return None;
            }
            Err(_) => return None,
        };
        if uuid == r.id {
            return None;
        }
        Some(ServiceError::Conflict {
            field: Some("name"),
            message: format!(
                "the libvirt domain {domain_name:?} already exists on {}: it belongs to {}; \
                 choose another instance name",
                self.backend.uri(),
                ownership::describe_holder(mark.as_ref()),
            ),
        })
    }

    async fn destroy_domain(&self, r: &InstanceRecord) -> Result<(), ServiceError> {
        let backend = self.backend.clone();
        let id = r.id.clone();
        // Announced first: libvirt's event may arrive before the call returns.
        self.destroys.expect(&r.id);
        let destroyed = blocking(move || backend.destroy(&id)).await;
        if !matches!(destroyed, Ok(Ok(true))) {
            self.destroys.cancel(&r.id);
        }
        destroyed?.map_err(ServiceError::Backend)?;
        Ok(())
    }

    /// Removes an instance's domain, console and record. The caller holds the name lock.
    async fn forget(&self, r: &InstanceRecord) -> Result<(), ServiceError> {
        self.store.set_desired(&r.id, Desired::Deleted)?;
        self.destroy_domain(r).await?;
        for log in console::log_files(&self.config.state_dir, &r.id) {
            if let Err(e) = std::fs::remove_file(&log) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %log.display(), error = %e, "cannot remove console log");
                }
            }
        }
        self.store.remove(&r.id)?;
        self.publish(r, "deleted", None, None);
        self.collect_garbage().await;
        Ok(())
    }

    /// Removes kernel blobs that no instance uses any more.
    async fn collect_garbage(&self) {
        let _gc = self.blob_gc.write().await;
        // Blobs of stored images stay even when no instance boots them.
        let referenced = match self
            .store
            .referenced_kernels()
            .map_err(ServiceError::from)
            .and_then(|k| Ok(k.into_iter().chain(self.image_blobs()?).collect()))
        {
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

    /// The instances `caller` may see, ordered by name.
    pub fn list(&self, caller: &Caller) -> Result<Vec<Instance>, ServiceError> {
        let mut all = self.list_all()?;
        all.retain(|i| authorize(caller, Action::ReadInstance(&i.name)).is_ok());
        Ok(all)
    }

    fn list_all(&self) -> Result<Vec<Instance>, ServiceError> {
        let mut images = self.store.all_instance_images()?;
        let mut nics = self.store.all_instance_nics()?;
        Ok(self
            .store
            .visible()?
            .iter()
            .map(|r| {
                let image = images.remove(&r.id);
                let nics = nics.remove(&r.id).unwrap_or_default();
                self.to_api_with(r, image, nics)
            })
            .collect())
    }

    /// [`list`](Self::list) as `InstanceList` JSON. Everyone without a prefix sees the same
    /// list: its serialisation is reused until the store changes.
    pub fn list_json(&self, caller: &Caller) -> Result<bytes::Bytes, ServiceError> {
        if caller.prefix.is_some() {
            let list = rhyzome_api::InstanceList {
                instances: self.list(caller)?,
            };
            return serde_json::to_vec(&list)
                .map(bytes::Bytes::from)
                .map_err(|e| ServiceError::Internal(e.to_string()));
        }
        // Read the generation first: a write that lands while the listing is built makes the
        // cached copy newer than its stamp, never older, so it is rebuilt on the next call.
        let generation = self.store.generation();
        if let Some((g, bytes)) = self
            .list_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if *g == generation {
                return Ok(bytes.clone());
            }
        }
        let list = rhyzome_api::InstanceList {
            instances: self.list_all()?,
        };
        let bytes = bytes::Bytes::from(
            serde_json::to_vec(&list).map_err(|e| ServiceError::Internal(e.to_string()))?,
        );
        *self.list_cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((generation, bytes.clone()));
        Ok(bytes)
    }

    pub fn get(&self, caller: &Caller, name: &str) -> Result<Instance, ServiceError> {
        authorize(caller, Action::ReadInstance(name))?;
        self.instance(name)
    }

    fn instance(&self, name: &str) -> Result<Instance, ServiceError> {
        self.get_record(name).map(|r| self.to_api(&r))
    }

    /// What a running instance uses now: CPU time, memory, and each NIC's counters.
    pub async fn stats(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<rhyzome_api::InstanceStats, ServiceError> {
        authorize(caller, Action::ReadInstance(name))?;
        let i = self.instance(name)?;
        let not_running = |state: InstanceState| ServiceError::Conflict {
            field: None,
            message: format!("instance {name:?} is {state}; statistics exist only while it runs"),
        };
        if i.state != InstanceState::Running {
            return Err(not_running(i.state));
        }
        let macs: Vec<String> = if i.interfaces.is_empty() {
            i.network.iter().map(|n| n.mac.clone()).collect()
        } else {
            i.interfaces.iter().map(|n| n.mac.clone()).collect()
        };
        let backend = self.backend.clone();
        let (id, asked) = (i.id.clone(), macs.clone());
        let Some(s) = blocking(move || backend.stats(&id, &asked))
            .await?
            .map_err(ServiceError::Backend)?
        else {
            // It ended between the read and the call; the reconciler records how.
            return Err(not_running(InstanceState::Exited));
        };
        Ok(rhyzome_api::InstanceStats {
            name: i.name,
            cpu_time_ns: s.cpu_time_ns,
            memory_kib: s.memory_kib,
            rss_kib: s.rss_kib,
            nics: macs
                .into_iter()
                .zip(s.nics)
                .map(|(mac, c)| rhyzome_api::NicStats {
                    mac,
                    rx_bytes: c.rx_bytes,
                    rx_packets: c.rx_packets,
                    tx_bytes: c.tx_bytes,
                    tx_packets: c.tx_packets,
                })
                .collect(),
        })
    }

    pub async fn delete(&self, caller: &Caller, name: &str) -> Result<(), ServiceError> {
        authorize(caller, Action::ChangeInstance(name, "delete instances"))?;
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        self.forget(&r).await?;
        tracing::info!(instance = %name, "instance deleted");
        Ok(())
    }

    pub async fn start(&self, caller: &Caller, name: &str) -> Result<Instance, ServiceError> {
        authorize(caller, Action::ChangeInstance(name, "start instances"))?;
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        self.store.set_desired(&r.id, Desired::Running)?;
        // A person starting it by hand ends any restart loop's bookkeeping.
        self.store.set_restart(&r.id, 0, None)?;
        let backend = self.backend.clone();
        let id = r.id.clone();
        let running = blocking(move || backend.status(&id))
            .await?
            .map_err(ServiceError::Backend)?
            .is_some_and(|d| d.active);
        if !running {
            self.start_domain(&r).await?;
        }
        self.instance(name)
    }

    pub async fn stop(&self, caller: &Caller, name: &str) -> Result<Instance, ServiceError> {
        authorize(caller, Action::ChangeInstance(name, "stop instances"))?;
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        self.store.set_desired(&r.id, Desired::Stopped)?;
        self.store.set_restart(&r.id, 0, None)?;
        self.destroy_domain(&r).await?;
        self.observe(&r, InstanceState::Stopped, None, None)?;
        tracing::info!(instance = %name, "instance stopped");
        self.instance(name)
    }

    pub async fn restart(&self, caller: &Caller, name: &str) -> Result<Instance, ServiceError> {
        authorize(caller, Action::ChangeInstance(name, "restart instances"))?;
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        self.store.set_desired(&r.id, Desired::Running)?;
        self.store.set_restart(&r.id, 0, None)?;
        self.destroy_domain(&r).await?;
        self.start_domain(&r).await?;
        tracing::info!(instance = %name, "instance restarted");
        self.instance(name)
    }

    /// Console output: every run so far, or only the current run, at most the last
    /// `tail_bytes` bytes and `tail` lines, or from the offset `after`. Also returns the log
    /// offset where the bytes end, from which [`console_after`](Self::console_after)
    /// continues.
    pub async fn console(
        &self,
        caller: &Caller,
        name: &str,
        q: &rhyzome_api::ConsoleQuery,
    ) -> Result<(Vec<u8>, u64), ServiceError> {
        authorize(caller, Action::ReadInstance(name))?;
        let r = self.get_record(name)?;
        let path = console::log_path(&self.config.state_dir, &r.id);
        let mut start = if q.current_run.unwrap_or(false) {
            console::run_start(&path, r.console_offset, r.console_inode)
        } else {
            0
        };
        if let Some(since) = &q.since {
            let at =
                console::parse_since(since, std::time::SystemTime::now()).ok_or_else(|| {
                    FieldError::new(
                        "since",
                        format!("{since:?} is neither an RFC 3339 time nor a duration like 10m"),
                    )
                })?;
            let offset = self
                .console_index
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&r.id)
                .map(|idx| idx.offset_at(at))
                .unwrap_or(0);
            start = start.max(offset);
        }
        if let Some(after) = q.after {
            start = after;
        }
        let limit = q
            .tail_bytes
            .unwrap_or(console::MAX_CONSOLE_READ)
            .min(console::MAX_CONSOLE_READ);
        let tail = q.tail;
        blocking(move || {
            let (bytes, from) = console::read_span(&path, start, limit)
                .map_err(|e| ServiceError::Internal(console::read_error(&path, &e)))?;
            // The end of what was read, not the size seen before: the log may have grown.
            let end = from + bytes.len() as u64;
            let bytes = match tail {
                Some(n) => console::last_lines(&bytes, n).to_vec(),
                None => bytes,
            };
            Ok((bytes, end))
        })
        .await?
    }

    /// Samples the size of every running instance's console log (one `stat` each), so that
    /// `since` can be resolved later. Called by every reconciler pass.
    pub(crate) fn sample_consoles(&self, records: &[InstanceRecord]) {
        let now = std::time::SystemTime::now();
        let mut index = self.console_index.lock().unwrap_or_else(|p| p.into_inner());
        index.retain(|id, _| records.iter().any(|r| &r.id == id));
        for r in records.iter().filter(|r| r.state == InstanceState::Running) {
            let len = console::log_len(&console::log_path(&self.config.state_dir, &r.id));
            index.entry(r.id.clone()).or_default().record(now, len);
        }
    }

    /// Console output written after `offset`, with the new end; `None` once the instance is
    /// gone (or was never `caller`'s to read).
    pub async fn console_after(
        &self,
        caller: &Caller,
        name: &str,
        offset: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, ServiceError> {
        let found =
            authorize(caller, Action::ReadInstance(name)).and_then(|()| self.get_record(name));
        let r = match found {
            Ok(r) => r,
            Err(ServiceError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = console::log_path(&self.config.state_dir, &r.id);
        blocking(move || {
            let len = console::log_len(&path);
            if len == offset {
                return Ok((Vec::new(), len));
            }
            // A log that shrank was rotated or truncated: start over from its beginning.
            let from = if len < offset { 0 } else { offset };
            let (bytes, from) = console::read_span(&path, from, console::MAX_CONSOLE_READ)
                .map_err(|e| ServiceError::Internal(console::read_error(&path, &e)))?;
            let end = from + bytes.len() as u64;
            Ok((bytes, end))
        })
        .await?
        .map(Some)
    }
}

struct ValidSpec {
    memory_mib: u32,
    vcpus: u32,
    bridge: Option<String>,
    mac: Option<String>,
    restart: RestartPolicy,
}

/// The bridges an instance joins, each with the request field that chose it: the NICs of a
/// multi-NIC image (`nets.DEVICE`), or its one bridge (`network.bridge`).
fn bridge_attachments(
    bridge: Option<&str>,
    nics: &[crate::store::images::NicRow],
) -> Vec<(String, String)> {
    if nics.is_empty() {
        bridge
            .map(|b| ("network.bridge".to_string(), b.to_string()))
            .into_iter()
            .collect()
    } else {
        nics.iter()
            .map(|n| (format!("nets.{}", n.device), n.bridge.clone()))
            .collect()
    }
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
mod ownership_tests;
#[cfg(test)]
mod tests;
