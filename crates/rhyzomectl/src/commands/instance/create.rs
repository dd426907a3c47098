//! `rhyzomectl instance create`.

use super::Context;
use crate::cli::CreateArgs;
use crate::output;
use rhyzome_api::{InstanceSpec, NetworkMode, NetworkSpec, RestartMode, RestartPolicy};

pub fn run(ctx: &Context, a: CreateArgs) -> anyhow::Result<()> {
    // Refuse what the server would refuse, without a round trip.
    rhyzome_api::validate::validate_name(&a.name)?;
    rhyzome_api::validate::validate_kernel_parameters(&a.kernel_parameters)?;
    let network = if a.no_network {
        Some(NetworkSpec {
            mode: NetworkMode::None,
            bridge: None,
            mac: None,
        })
    } else if a.bridge.is_some() || a.mac.is_some() {
        Some(NetworkSpec {
            mode: NetworkMode::Bridge,
            bridge: a.bridge,
            mac: a.mac,
        })
    } else {
        None
    };
    let restart = match (a.restart, a.restart_exit_codes) {
        (None, None) => None,
        (mode, exit_codes) => {
            let (policy, max_retries) = mode.unwrap_or((RestartMode::OnFailure, None));
            Some(RestartPolicy {
                policy,
                max_retries,
                exit_codes,
            })
        }
    };
    let client = ctx.client()?;
    // A local file is pushed first (nothing is sent if the server has it) and booted by digest.
    let image = match (&a.kernel_file, a.image) {
        (Some(file), _) => {
            let pushed = crate::commands::image::push::push(ctx, &client, file, None, false)?;
            Some(pushed.upload.image.digest)
        }
        (None, image) => image,
    };
    let spec = InstanceSpec {
        name: a.name,
        kernel: a.kernel.unwrap_or_default(),
        image,
        nets: (!a.nets.is_empty()).then(|| a.nets.into_iter().collect()),
        kernel_parameters: a.kernel_parameters,
        memory_mib: a.memory,
        vcpus: a.vcpus,
        network,
        restart,
        startup_priority: a.startup_priority,
        autostart: a.autostart.then_some(true),
    };
    let instance = client.create_instance(&spec)?;
    if ctx.json() {
        return output::json(&instance);
    }
    println!(
        "created {} ({}, {})",
        instance.name,
        output::state(&instance),
        output::network(&instance)
    );
    Ok(())
}
