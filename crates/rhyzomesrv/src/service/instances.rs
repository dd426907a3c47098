//! Instances: create (validation, quota, recording, rollback), reading them back as API
//! values (get, list and the list cache), delete, start, stop, restart, starting and
//! destroying their domains, and collecting the kernel blobs no instance uses any more.
//!
//! Concurrency: every operation on one instance holds its name lock; create also holds its
//! owner's lock from the quota check to the insert, and a read guard on blob collection while
//! it resolves its boot source and writes its record.

use super::authz::{authorize, Action};
use super::boot_plan::{bridge_fields, mac_for_name};
use super::{blocking, ms_to_rfc3339, now_rfc3339, ownership, Service, ServiceError};
use crate::auth::Caller;
use crate::backend::{self, BackendError};
use crate::console;
use crate::store::attachments::Attachment;
use crate::store::{Desired, InstanceRecord, StoreError};
use rhyzome_api::validate::{self, FieldError};
use rhyzome_api::{
    Instance, InstanceSpec, InstanceState, NetworkAttachment, NetworkMode, RestartPolicy,
    DEFAULT_MEMORY_MIB, DEFAULT_VCPUS,
};

impl Service {
    pub(super) fn to_api(&self, r: &InstanceRecord) -> Instance {
        let image = self.store.instance_image(&r.id).ok().flatten();
        self.to_api_with(r, image)
    }

    /// The API's view of `r`: its NICs as the one ordered `attachments`, and, as older
    /// clients read them, the first as `network` and those for manifest devices as
    /// `interfaces`.
    pub(super) fn to_api_with(&self, r: &InstanceRecord, image: Option<String>) -> Instance {
        let devices = self.devices_of(r);
        // Each attachment's managed network (name, prefix), for its `A.B.C.D/N`.
        let networks: std::collections::HashMap<String, (String, u8)> = self
            .store
            .networks()
            .unwrap_or_default()
            .into_iter()
            .map(|n| (n.id, (n.name, n.subnet.prefix())))
            .collect();
        let network_of = |a: &crate::store::attachments::Attachment| {
            a.network.as_ref().and_then(|id| networks.get(id))
        };
        let cidr_of = |a: &crate::store::attachments::Attachment| {
            Some(format!("{}/{}", a.address?, network_of(a)?.1))
        };
        let kernel_parameters_expanded = self.expanded_parameters(r).unwrap_or_else(|e| {
            tracing::warn!(instance = %r.name, error = %e, "cannot fill in the kernel parameters");
            r.kernel_parameters.clone()
        });
        Instance {
            id: r.id.clone(),
            name: r.name.clone(),
            domain_name: backend::domain_name(&r.name),
            kernel: r.kernel.clone(),
            kernel_sha256: r.kernel_sha256.clone(),
            image,
            attachments: r
                .attachments
                .iter()
                .map(|a| rhyzome_api::NicAttachment {
                    device: a.device.clone(),
                    bridge: a.bridge.clone(),
                    mac: a.mac.clone(),
                    pci_slot: a.pci_slot,
                    conditions: a.conditions,
                    network: network_of(a).map(|n| n.0.clone()),
                    ipv4: cidr_of(a),
                })
                .collect(),
            interfaces: r
                .attachments
                .iter()
                .filter_map(|a| {
                    Some(rhyzome_api::InterfaceAttachment {
                        device: a.device.clone()?,
                        bridge: a.bridge.clone(),
                        mac: a.mac.clone(),
                        pci_slot: a.pci_slot?,
                        network: network_of(a).map(|n| n.0.clone()),
                        ipv4: cidr_of(a),
                    })
                })
                .collect(),
            volumes: self.attachments_of(&r.id),
            kernel_parameters: r.kernel_parameters.clone(),
            kernel_parameters_expanded,
            memory_mib: r.memory_mib,
            vcpus: r.vcpus,
            network: r.attachments.first().map(|a| NetworkAttachment {
                bridge: a.bridge.clone(),
                mac: a.mac.clone(),
                ipv4: cidr_of(a).or_else(|| validate::ipv4_from_parameters(&r.kernel_parameters)),
                network: network_of(a).map(|n| n.0.clone()),
            }),
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
            labels: r.labels.clone(),
            startup_priority: r.startup_priority,
            autostart: r.autostart,
            owner: r.owner.clone(),
            placement: Some(rhyzome_api::Placement {
                host: self.host_name(&r.host).to_string(),
                how: r
                    .placement
                    .as_ref()
                    .map(|p| p.how.clone())
                    .unwrap_or_else(|| "pinned".into()),
                reason: r
                    .placement
                    .as_ref()
                    .map(|p| p.reason.clone())
                    .unwrap_or_else(|| "created before hosts: the primary host".into()),
                decided_at: r
                    .placement
                    .as_ref()
                    .map(|p| p.decided_at.clone())
                    .unwrap_or_else(|| r.created_at.clone()),
            }),
            failover: r.failover,
        }
    }

    /// Checks a spec and fills in defaults; touches nothing.
    pub(super) fn validate_spec(&self, spec: &InstanceSpec) -> Result<ValidSpec, FieldError> {
        validate::validate_name(&spec.name)?;
        validate::validate_kernel_parameters(&spec.kernel_parameters)?;
        let memory_mib = spec.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB);
        validate::validate_memory_mib(memory_mib)?;
        let vcpus = spec.vcpus.unwrap_or(DEFAULT_VCPUS);
        validate::validate_vcpus(vcpus)?;
        if spec.kernel.is_empty() && spec.image.is_none() {
            return Err(FieldError::new("kernel", "must not be empty"));
        }
        let template = rhyzome_api::placeholders::Template::parse(&spec.kernel_parameters)?;
        let network = spec.network.clone().unwrap_or_default();
        let network_name =
            match (&network.name, &network.bridge) {
                (Some(_), Some(_)) => return Err(FieldError::new(
                    "network.bridge",
                    "must not be set with network.name: a managed network brings its own bridge",
                )),
                (Some(name), None) => {
                    validate::validate_name(name)
                        .map_err(|e| FieldError::new("network.name", e.message))?;
                    Some(name.clone())
                }
                (None, _) => None,
            };
        let requested_ip = match (&network.ipv4, &network_name) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(FieldError::new(
                    "network.ipv4",
                    "needs network.name: only managed networks give addresses",
                ))
            }
            (Some(ip), Some(_)) => Some(ip.parse::<std::net::Ipv4Addr>().map_err(|_| {
                FieldError::new("network.ipv4", format!("{ip:?} is not an IPv4 address"))
            })?),
        };
        let (bridge, mac) = match network.mode {
            NetworkMode::None => {
                if network.bridge.is_some() || network.mac.is_some() || network.name.is_some() {
                    return Err(FieldError::new(
                        "network.mode",
                        "is \"none\", so network.bridge, network.mac and network.name must not \
                         be set",
                    ));
                }
                (None, None)
            }
            NetworkMode::Bridge => {
                // A managed network's bridge is resolved with the network.
                let bridge = network
                    .bridge
                    .unwrap_or_else(|| self.config.bridge_interface.clone());
                if network_name.is_none() {
                    validate::validate_bridge(&bridge)?;
                }
                let mac = match network.mac {
                    Some(m) => validate::format_mac(validate::parse_mac(&m)?),
                    None => mac_for_name(&spec.name),
                };
                (Some(bridge), Some(mac))
            }
        };
        let restart = spec.restart.clone().unwrap_or_default();
        validate::validate_restart_policy(&restart)?;
        validate::validate_labels(&spec.labels)?;
        if let Some(link) = &spec.link {
            // What a plain network cannot honour is refused once the networks are known.
            validate::validate_conditions(link, "link.")?;
        }
        Ok(ValidSpec {
            memory_mib,
            vcpus,
            bridge,
            mac,
            restart,
            network_name,
            requested_ip,
            template,
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
        let gc_guard = self.blobs.pin().await;
        let recorded = self.record_instance(&spec, valid, caller).await;
        drop(gc_guard);
        let record = match recorded {
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
                let e = self.explain_start_error(&record, e);
                self.forget(&record).await?;
                return Err(e);
            }
        }
        self.get_record(&record.name).map(|r| self.to_api(&r))
    }

    /// Resolves what `spec` boots (copying a kernel into the blob store), plans its devices,
    /// checks its bridges against `caller`'s quota and the libvirt host, and inserts its
    /// record. The caller holds the owner and name locks and a read guard on blob collection.
    pub(super) async fn record_instance(
        &self,
        spec: &InstanceSpec,
        valid: ValidSpec,
        caller: &Caller,
    ) -> Result<InstanceRecord, ServiceError> {
        let boot = self.resolve_boot(spec, caller).await?;
        let (planned_spec, managed_bridge, managed) = self.resolve_managed(
            spec,
            valid.network_name.as_deref(),
            valid.requested_ip,
            caller,
        )?;
        let mut attachments = self.plan_devices(
            &planned_spec,
            &boot,
            managed_bridge.or(valid.bridge),
            valid.mac,
        )?;
        Self::join_networks(&managed, &mut attachments);
        Self::check_host_bridges(&attachments, caller)?;
        Self::check_placeholders(&valid.template, &spec.name, &attachments)?;
        let emulated = self.emulator_ports(&attachments)?;
        let on_emulated =
            |a: &Attachment| a.network.as_ref().is_some_and(|n| emulated.contains_key(n));
        for a in &mut attachments {
            a.conditions = spec.link.unwrap_or_default();
            if !on_emulated(a) {
                super::links::check_plain_link(&a.conditions, "link.")?;
            }
        }
        // Held until the record (with its volumes) is written.
        let _volume_guards = self.lock_requested_volumes(spec).await;
        let block_devices = super::boot_plan::manifest_of(&boot.inspection)
            .map(|m| m.block_devices())
            .unwrap_or_default();
        let volumes: Vec<crate::store::volumes::AttachmentRow> = self
            .plan_volumes(spec, &block_devices, caller)?
            .into_iter()
            .map(|p| p.attachment)
            .collect();
        // Only host bridges are checked: an emulated network's NICs have none (its name is the
        // emulator's tap), and a managed network's bridge is made on the chosen host when the
        // guest starts there.
        let bridged: Vec<Attachment> = attachments
            .iter()
            .filter(|a| a.network.is_none())
            .cloned()
            .collect();
        let ties = super::scheduler::ties(&attachments, &emulated, !volumes.is_empty());
        let placed = self.place(spec, valid.memory_mib, ties)?;
        self.check_bridges(&placed.host, bridge_fields(&bridged))
            .await?;
        let record = InstanceRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            kernel: spec.kernel.clone(),
            kernel_sha256: boot.sha256,
            kernel_parameters: spec.kernel_parameters.clone(),
            memory_mib: valid.memory_mib,
            vcpus: valid.vcpus,
            attachments,
            labels: spec.labels.clone(),
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
            host: placed.host.clone(),
            placement: Some(placed.record.clone()),
            failover: placed.failover,
        };
        self.remember_manifest(&record.kernel_sha256, &boot.inspection);
        let record = self
            .insert_with_addresses(record, boot.image.as_deref(), &volumes)
            .await?;
        // With the real addresses: the expanded text must fit too.
        if let Err(e) = self.expanded_parameters(&record) {
            self.update_dhcp_entries(&record, false).await;
            self.store.remove(&record.id)?;
            return Err(e);
        }
        Ok(record)
    }

    /// Maps the store's refusal of a new record to the field at fault.
    pub(super) fn explain_insert_error(e: StoreError) -> ServiceError {
        match e {
            StoreError::NameTaken(name) => ServiceError::Conflict {
                field: Some("name"),
                message: format!("an instance named {name:?} already exists"),
            },
            StoreError::MacTaken(mac) => ServiceError::Conflict {
                field: Some("network.mac"),
                message: format!("{mac} is already used by another instance"),
            },
            e => e.into(),
        }
    }

    /// Turns libvirt's refusal to start a guest into an error that names the request field
    /// when the request is at fault: the bridge libvirt names (`Cannot get interface MTU on
    /// 'br9'`), or the only bridge when it names none. A domain name held by someone else is
    /// already a 409 from [`Self::start_domain`].
    pub(super) fn explain_start_error(&self, r: &InstanceRecord, e: ServiceError) -> ServiceError {
        let ServiceError::Backend(BackendError::Rejected { message }) = &e else {
            return e;
        };
        // libvirt shapes a plain NIC's rate with tc (police, htb, sfq); a kernel without
        // those modules fails the start with tc's message.
        if message.contains("tc ")
            && r.attachments
                .iter()
                .any(|a| a.conditions.rate_bps.is_some())
        {
            return ServiceError::Invalid(FieldError::new(
                "link.rate_bps",
                format!(
                    "this host cannot shape rate on a plain network (libvirt's tc failed: \
                     {message}); use an emulated network"
                ),
            ));
        }
        let attachments = bridge_fields(&r.attachments);
        // libvirt names the bridge as the host calls it (its `Bridges`).
        let named = attachments.iter().find(|(_, bridge)| {
            message.contains(&format!("'{bridge}'"))
                || message.contains(&format!("'{}'", self.bridge_on(&r.host, bridge)))
        });
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
    pub(super) async fn start_domain(&self, r: &InstanceRecord) -> Result<(), ServiceError> {
        // The emulator of an emulated network must know the NIC before QEMU sends a frame.
        self.ensure_emulators_of(&r.attachments).await?;
        self.ensure_networks_on(&r.host, &r.attachments).await?;
        let backend = self.backend_on(&r.host)?;
        let mut def = self.definition(r)?;
        for nic in def.nics.iter_mut().filter(|n| n.emulated.is_none()) {
            nic.bridge = self.bridge_on(&r.host, &nic.bridge);
        }
        let (kernel, console_log, position) = self.host_paths(r).await?;
        def.kernel = kernel;
        def.console_log = console_log;
        self.store.set_started(&r.id, &now_rfc3339(), position)?;
        self.publish(r, InstanceState::Starting.as_str(), None, None);
        // A new run: how an earlier one ended no longer matters.
        self.destroys.take_outside(&r.id);
        let started = std::time::Instant::now();
        let domain_name = def.domain_name.clone();
        match blocking(move || backend.create(&def)).await? {
            Ok(()) => {
                tracing::info!(instance = %r.name, elapsed_ms = started.elapsed().as_millis() as u64, "domain started");
                self.observe(r, InstanceState::Running, None, None)
            }
            Err(e) => {
                self.host_failed(&r.host, &e);
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
    pub(super) async fn name_held_by_another(
        &self,
        r: &InstanceRecord,
        domain_name: &str,
    ) -> Option<ServiceError> {
        let backend = self.backend_on(&r.host).ok()?;
        let uri = backend.uri();
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
                uri,
                ownership::describe_holder(mark.as_ref()),
            ),
        })
    }

    pub(super) async fn destroy_domain(&self, r: &InstanceRecord) -> Result<(), ServiceError> {
        let backend = self.backend_on(&r.host)?;
        let id = r.id.clone();
        // Announced first: libvirt's event may arrive before the call returns.
        self.destroys.expect(&r.id);
        let destroyed = blocking(move || backend.destroy(&id)).await;
        if !matches!(destroyed, Ok(Ok(true))) {
            self.destroys.cancel(&r.id);
        }
        destroyed?.map_err(|e| {
            self.host_failed(&r.host, &e);
            ServiceError::Backend(e)
        })?;
        Ok(())
    }

    /// Removes an instance's domain, console and record. The caller holds the name lock.
    pub(super) async fn forget(&self, r: &InstanceRecord) -> Result<(), ServiceError> {
        self.store.set_desired(&r.id, Desired::Deleted)?;
        self.destroy_domain(r).await?;
        for log in console::log_files(&self.config.state_dir, &r.id) {
            if let Err(e) = std::fs::remove_file(&log) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %log.display(), error = %e, "cannot remove console log");
                }
            }
        }
        self.remove_console_on(&r.host, r).await;
        // The record's addresses go with it; their DHCP entries first.
        self.update_dhcp_entries(r, false).await;
        self.store.remove(&r.id)?;
        // Its ports leave their emulators; a failure is corrected at the next ensure.
        if let Err(e) = self.ensure_emulators_of(&r.attachments).await {
            tracing::warn!(instance = %r.name, error = %e, "cannot update a link emulator");
        }
        self.publish(r, "deleted", None, None);
        self.collect_garbage().await;
        self.collect_host_kernels().await;
        Ok(())
    }

    /// Removes kernel blobs that no instance uses any more.
    pub(super) async fn collect_garbage(&self) {
        let exclusive = self.blobs.exclusive().await;
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
        match self.blobs.collect_garbage(&exclusive, &referenced) {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed unused kernel blobs"),
            Err(e) => tracing::warn!(error = %e, "kernel blob garbage collection failed"),
        }
    }

    pub(super) fn get_record(&self, name: &str) -> Result<InstanceRecord, ServiceError> {
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

    pub(super) fn list_all(&self) -> Result<Vec<Instance>, ServiceError> {
        let mut images = self.store.all_instance_images()?;
        Ok(self
            .store
            .visible()?
            .iter()
            .map(|r| {
                let image = images.remove(&r.id);
                self.to_api_with(r, image)
            })
            .collect())
    }

    /// [`list`](Self::list) as `InstanceList` JSON, only the instances matching `selector`
    /// (`key=value[,...]`) when one is given. Everyone without a prefix sees the same full
    /// list: its serialisation is reused until the store changes.
    pub fn list_json(
        &self,
        caller: &Caller,
        selector: Option<&str>,
    ) -> Result<bytes::Bytes, ServiceError> {
        let selector = selector
            .map(|s| validate::parse_selector(s, "selector"))
            .transpose()?;
        if caller.prefix.is_some() || selector.is_some() {
            let mut instances = self.list(caller)?;
            if let Some(selector) = &selector {
                instances.retain(|i| validate::selector_matches(selector, &i.labels));
            }
            let list = rhyzome_api::InstanceList { instances };
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

    pub(super) fn instance(&self, name: &str) -> Result<Instance, ServiceError> {
        self.get_record(name).map(|r| self.to_api(&r))
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
        let backend = self.backend_on(&r.host)?;
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
}

pub(super) struct ValidSpec {
    memory_mib: u32,
    vcpus: u32,
    bridge: Option<String>,
    mac: Option<String>,
    restart: RestartPolicy,
    /// The managed network of the single NIC (`network.name`) and the address asked for.
    network_name: Option<String>,
    requested_ip: Option<std::net::Ipv4Addr>,
    template: rhyzome_api::placeholders::Template,
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
