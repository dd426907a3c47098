//! `rhyzomectl instance create`: one instance, or with `--count` a test bed of many, created
//! concurrently from templated names and kernel parameters.

use super::Context;
use crate::cli::CreateArgs;
use crate::output;
use crate::template::Template;
use rhyzome_api::{Instance, InstanceSpec, NetworkMode, NetworkSpec, RestartMode, RestartPolicy};

pub fn run(ctx: &Context, a: CreateArgs) -> anyhow::Result<()> {
    // Refuse what the server would refuse, without a round trip. With --count, every name and
    // command line is expanded and checked before the first instance is created.
    let names_and_parameters = match a.count {
        None if a.name.contains('{') => {
            anyhow::bail!("--name {:?}: a name template needs --count N", a.name)
        }
        None => vec![(a.name.clone(), a.kernel_parameters.clone())],
        Some(count) => expand(&a.name, &a.kernel_parameters, count)?,
    };
    for (name, parameters) in &names_and_parameters {
        rhyzome_api::validate::validate_name(name)?;
        rhyzome_api::validate::validate_kernel_parameters(parameters)?;
    }
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
    if let Some(restart) = &restart {
        rhyzome_api::validate::validate_restart_policy(restart)?;
    }
    let client = ctx.client()?;
    // A local file is pushed first (nothing is sent if the server has it) and booted by digest.
    let image = match (&a.kernel_file, a.image) {
        (Some(file), _) => {
            let pushed = crate::commands::image::push::push(ctx, &client, file, None, false)?;
            Some(pushed.upload.image.digest)
        }
        (None, image) => image,
    };
    let template = InstanceSpec {
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
    if a.count.is_none() {
        let instance = client.create_instance(&template)?;
        if ctx.json() {
            return output::json(&instance);
        }
        println!("created {}", describe(&instance));
        return Ok(());
    }

    let started = std::time::Instant::now();
    let results = crate::parallel::map(
        &names_and_parameters,
        a.parallel as usize,
        |(name, parameters)| {
            let spec = InstanceSpec {
                name: name.clone(),
                kernel_parameters: parameters.clone(),
                ..template.clone()
            };
            let result = create_with_retries(&client, &spec);
            // Progress as it happens: a test bed of a hundred guests takes a while.
            match &result {
                Ok(i) if !ctx.json() => println!("created {}", describe(i)),
                Ok(_) => {}
                Err(e) => eprintln!("rhyzomectl: {name}: {e}"),
            }
            result
        },
    );
    let total = results.len();
    let created: Vec<Instance> = results.into_iter().filter_map(Result::ok).collect();
    if ctx.json() {
        output::json(&created)?;
    } else {
        println!(
            "created {} of {total} instances in {:.1} s",
            created.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let failed = total - created.len();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {total} instances could not be created; the others were \
             (`rhyzomectl instance delete --prefix PREFIX` removes a test bed)"
        );
    }
    Ok(())
}

/// A create, retried while the server's per-caller rate limit refuses it (429): a test bed
/// larger than the server's `CreateBurst` then simply takes a little longer.
fn create_with_retries(
    client: &rhyzome_api::client::Client,
    spec: &InstanceSpec,
) -> Result<Instance, rhyzome_api::client::ClientError> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        match client.create_instance(spec) {
            Err(e) if e.status() == Some(429) && std::time::Instant::now() + delay < give_up => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_secs(4));
            }
            result => return result,
        }
    }
}

fn describe(i: &Instance) -> String {
    format!("{} ({}, {})", i.name, output::state(i), output::network(i))
}

/// The name and kernel parameters of each of `count` instances.
fn expand(name: &str, parameters: &str, count: u32) -> anyhow::Result<Vec<(String, String)>> {
    let mut name_template = Template::parse("--name", name)?;
    if !name_template.has_index() {
        name_template = Template::parse("--name", &format!("{name}-{{i}}"))?;
    }
    let parameters = Template::parse("--kernel-parameters", parameters)?;
    // Names are distinct: every placeholder is the index plus a fixed offset.
    (1..=u64::from(count))
        .map(|i| Ok((name_template.expand(i)?, parameters.expand(i)?)))
        .collect()
}
