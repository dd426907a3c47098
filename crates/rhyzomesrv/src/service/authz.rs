//! Authorization: what a caller may do, decided here and nowhere else.
//!
//! Every public [`Service`] operation takes the [`Caller`] and asks [`Service::authorize`]
//! before it touches anything; HTTP handlers only translate requests into those calls. The
//! rules: instances, networks, test beds and images outside a caller's name prefix do not exist for it (404, so
//! that tenants cannot probe each other's names), and changing anything needs the operator
//! role (403). A few handlers also call `authorize` themselves, before work that must not be
//! spent on a refused request (reading an upload body, taking a stream slot); the operation
//! then checks again, which is cheap.
//!
//! Internal callers (tests, the test harness, benchmarks) pass [`Caller::internal`], which
//! the HTTP layer never produces.

use super::{Service, ServiceError};
use crate::auth::{Caller, Role};
use rhyzome_api::validate::FieldError;

/// What a caller asks to do.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// Read the named instance: its record, statistics, console or events.
    ReadInstance(&'a str),
    /// Change the named instance; the verb names the refused action in the error.
    ChangeInstance(&'a str, &'static str),
    /// Create instances (the new name's prefix is checked once the spec is valid).
    CreateInstances,
    /// Upload images (the name's prefix is checked with the upload's other fields).
    UploadImages,
    /// Delete images (images outside the prefix are not found by the lookup itself).
    DeleteImages,
    /// Read the named managed network.
    ReadNetwork(&'a str),
    /// Change the named managed network; the verb names the refused action in the error.
    ChangeNetwork(&'a str, &'static str),
    /// Create managed networks (the new name's prefix is checked once the request is valid).
    CreateNetworks,
    /// Read the named test bed.
    ReadTestbed(&'a str),
    /// Change the named test bed; the verb names the refused action in the error.
    ChangeTestbed(&'a str, &'static str),
    /// Apply test beds (the bed's name prefix is checked once the file is valid).
    CreateTestbeds,
    /// Read the node's metrics (`GET /metrics`): every instance's counters, so only a token
    /// without a name prefix may; any role will do, `metrics` included.
    ReadMetrics,
    /// Any request but `GET /metrics`: the `metrics` role may make none. Checked by the
    /// authentication middleware for every request, so that no endpoint, present or future,
    /// is open to a Prometheus token by omission.
    UseApi,
    /// List volumes (those outside the prefix are left out by the listing itself).
    ListVolumes,
    /// Read the named volume: its record or its content.
    ReadVolume(&'a str),
    /// Change the named volume; the verb names the refused action in the error.
    ChangeVolume(&'a str, &'static str),
    /// Create volumes (the new name's prefix is checked once the spec is valid).
    CreateVolumes,
    /// Read the libvirt hosts: they carry every tenant's instances, so only a token without
    /// a name prefix may.
    ReadHosts,
}

impl Service {
    /// Whether `caller` may do `action`: not found before forbidden, so that a tenant learns
    /// nothing about another tenant's names.
    pub fn authorize(&self, caller: &Caller, action: Action<'_>) -> Result<(), ServiceError> {
        authorize(caller, action)
    }
}

pub fn authorize(caller: &Caller, action: Action<'_>) -> Result<(), ServiceError> {
    let change = match action {
        Action::ReadInstance(name) => return visible(caller, name),
        Action::ReadMetrics => {
            return whole_node(caller, "metrics cover every instance on this node")
        }
        Action::ReadHosts => return whole_node(caller, "hosts carry every tenant's instances"),
        Action::UseApi => return Ok(caller.require(Role::Viewer, "use the API beyond /metrics")?),
        Action::ChangeInstance(name, verb) => {
            visible(caller, name)?;
            verb
        }
        Action::CreateInstances => "create instances",
        Action::UploadImages => "upload images",
        Action::DeleteImages => "delete images",
        Action::ReadNetwork(name) => return network_visible(caller, name),
        Action::ChangeNetwork(name, verb) => {
            network_visible(caller, name)?;
            verb
        }
        Action::CreateNetworks => "create networks",
        Action::ListVolumes => return Ok(()),
        Action::ReadVolume(name) => return visible_volume(caller, name),
        Action::ChangeVolume(name, verb) => {
            visible_volume(caller, name)?;
            verb
        }
        Action::CreateVolumes => "create volumes",
        Action::ReadTestbed(name) => return testbed_visible(caller, name),
        Action::ChangeTestbed(name, verb) => {
            testbed_visible(caller, name)?;
            verb
        }
        Action::CreateTestbeds => "apply test beds",
    };
    Ok(caller.require(Role::Operator, change)?)
}

/// What covers every instance (metrics, hosts) a tenant's token cannot read; `why` says so.
fn whole_node(caller: &Caller, why: &str) -> Result<(), ServiceError> {
    match &caller.prefix {
        None => Ok(()),
        Some(prefix) => Err(crate::auth::AuthError::OutOfScope(FieldError::new(
            "token",
            format!(
                "token {:?} is limited to instances named {prefix:?}*, and {why}",
                caller.name
            ),
        ))
        .into()),
    }
}

/// Instances outside the caller's prefix do not exist for it.
fn visible(caller: &Caller, name: &str) -> Result<(), ServiceError> {
    if caller.sees(name) {
        Ok(())
    } else {
        Err(ServiceError::NotFound(name.to_string()))
    }
}

/// Networks outside the caller's prefix do not exist for it, as instances do not.
fn network_visible(caller: &Caller, name: &str) -> Result<(), ServiceError> {
    if caller.sees(name) {
        Ok(())
    } else {
        Err(ServiceError::NetworkNotFound(name.to_string()))
    }
}

/// Test beds outside the caller's prefix do not exist for it, as instances do not.
fn testbed_visible(caller: &Caller, name: &str) -> Result<(), ServiceError> {
    if caller.sees(name) {
        Ok(())
    } else {
        Err(ServiceError::TestbedNotFound(name.to_string()))
    }
}

/// Volumes outside the caller's prefix do not exist for it.
fn visible_volume(caller: &Caller, name: &str) -> Result<(), ServiceError> {
    if caller.sees(name) {
        Ok(())
    } else {
        Err(super::volumes::VolumeError::NotFound(name.to_string()).into())
    }
}
