//! `rhyzomectl instance create`: one instance, or with `--count` a test bed of many, created
//! concurrently from templated names and kernel parameters.

use super::Context;
use crate::output;
use crate::template::Template;
use clap::{Args, ValueEnum};
use rhyzome_api::hosts::PlacementPolicy;
use rhyzome_api::{Instance, InstanceSpec, NetworkMode, NetworkSpec, RestartMode, RestartPolicy};

#[derive(Clone, Copy, ValueEnum)]
pub enum PlacementArg {
    /// The host with the fewest instances: instances spread evenly.
    Spread,
    /// The fullest host that still has room: hosts fill up one by one.
    Binpack,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Instance name: 1 to 63 characters of a-z, 0-9 and '-'.
    #[arg(long)]
    pub name: String,
    /// Path of the unikernel image on the server (inside its KernelDirs).
    #[arg(long, required_unless_present_any = ["image", "kernel_file"], conflicts_with_all = ["image", "kernel_file"])]
    pub kernel: Option<String>,
    /// Boot an uploaded image: NAME[:TAG] or sha256:HEX.
    #[arg(long, conflicts_with = "kernel_file")]
    pub image: Option<String>,
    /// Boot this local file: it is uploaded first unless the server already has it.
    #[arg(long, value_name = "FILE")]
    pub kernel_file: Option<std::path::PathBuf>,
    /// For images whose manifest declares several network devices: the network of a device,
    /// DEVICE=NAME (repeat for each device); NAME is a managed network if one has that name,
    /// else a host bridge.
    #[arg(long = "net", value_name = "DEVICE=NAME", value_parser = parse_net,
          conflicts_with_all = ["bridge", "mac", "no_network", "network"])]
    pub nets: Vec<(String, String)>,
    /// The volume of a block device the image's Solo5 manifest declares: DEVICE=VOLUME,
    /// or DEVICE=VOLUME:ro to attach it read-only (once per device).
    #[arg(long = "volume", value_name = "DEVICE=VOLUME[:ro]",
          value_parser = rhyzome_api::volumes::parse_volume_arg)]
    pub volumes: Vec<(String, rhyzome_api::VolumeMount)>,
    /// Join the managed network NAME (see `rhyzomectl network`): the NIC gets an address
    /// from its subnet, which --kernel-parameters can use as {ip}, {cidr}, {gateway}, ...
    #[arg(long, value_name = "NAME", conflicts_with_all = ["bridge", "no_network"])]
    pub network: Option<String>,
    /// With --network: this address rather than the lowest free one.
    #[arg(
        long,
        value_name = "IPV4",
        requires = "network",
        conflicts_with = "count"
    )]
    pub ip: Option<String>,
    /// Command line for the unikernel, e.g. "--ipv4 192.168.100.43/24", or with --network
    /// "--ipv4={cidr} --ipv4-gateway={gateway}" (the server fills those in; {{ and }} are
    /// literal braces).
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    pub kernel_parameters: String,
    /// Guest memory in MiB [server default: 32].
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u32>,
    /// Virtual CPUs [server default: 1].
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Bridge to join [server default: its BridgeInterface].
    #[arg(long, conflicts_with = "no_network")]
    pub bridge: Option<String>,
    /// MAC address of the NIC [default: derived from the name].
    #[arg(long, conflicts_with = "no_network")]
    pub mac: Option<String>,
    /// Give the instance no network device.
    #[arg(long)]
    pub no_network: bool,
    /// Restart policy: never, on-failure[:MAX_RETRIES] or always[:MAX_RETRIES].
    #[arg(long, value_name = "POLICY", value_parser = parse_restart)]
    pub restart: Option<(rhyzome_api::RestartMode, Option<u32>)>,
    /// With --restart on-failure: the exit codes that count as failure (default: all but 0).
    #[arg(
        long,
        value_name = "CODES",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub restart_exit_codes: Option<Vec<i32>>,
    /// Start-up order when the daemon (re)starts guests; lower first [default: 0].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub startup_priority: Option<i32>,
    /// Start the instance again when the daemon finds it gone without an exit (host reboot).
    #[arg(long)]
    pub autostart: bool,
    /// A label, KEY=VALUE (repeat for more), e.g. --label group=eu --label testbed=t1; it
    /// selects the instance in `instance list --selector` and in network partitions.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Link conditions of the instance's NICs: latency=40ms,jitter=5ms,loss=1%[/25%],
    /// rate=10mbit,down. A plain network honours only rate.
    #[arg(long, value_name = "CONDITIONS", value_parser = parse_link)]
    pub link: Option<rhyzome_api::LinkConditions>,
    /// Run on this host (see `rhyzomectl host list`) rather than where the scheduler chooses.
    #[arg(long, value_name = "NAME",
          conflicts_with_all = ["host_selector", "placement", "failover"])]
    pub host: Option<String>,
    /// Only hosts carrying all these labels: KEY=VALUE[,KEY=VALUE...].
    #[arg(long, value_name = "KEY=VALUE[,KEY=VALUE]",
          value_parser = rhyzome_api::hosts::parse_host_selector)]
    pub host_selector: Option<std::collections::BTreeMap<String, String>>,
    /// How the scheduler picks among the hosts [server default: spread].
    #[arg(long, value_enum)]
    pub placement: Option<PlacementArg>,
    /// Recreate the instance on another host when its host stays unreachable (not with a
    /// read-write volume).
    #[arg(long)]
    pub failover: bool,
    /// A test bed: create N instances, NAME-1 to NAME-N, or NAME as a template with {i} (the
    /// index, from 1), {i+K} or {i-K}. --kernel-parameters takes the same placeholders, e.g.
    /// "--ipv4 192.168.100.{i+9}/24"; {{ and }} are literal braces.
    #[arg(long, value_name = "N", conflicts_with = "mac",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: Option<u32>,
    /// With --count: how many creates are in flight at once.
    #[arg(long, value_name = "N", default_value_t = 16, requires = "count",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
}

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
        rhyzome_api::placeholders::Template::parse(parameters)?;
    }
    let network = if a.no_network {
        Some(NetworkSpec {
            mode: NetworkMode::None,
            bridge: None,
            mac: None,
            ..Default::default()
        })
    } else if a.bridge.is_some() || a.mac.is_some() || a.network.is_some() {
        Some(NetworkSpec {
            mode: NetworkMode::Bridge,
            bridge: a.bridge,
            mac: a.mac,
            name: a.network,
            ipv4: a.ip,
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
        volumes: (!a.volumes.is_empty()).then(|| a.volumes.into_iter().collect()),
        kernel_parameters: a.kernel_parameters,
        memory_mib: a.memory,
        vcpus: a.vcpus,
        network,
        restart,
        startup_priority: a.startup_priority,
        autostart: a.autostart.then_some(true),
        labels: a.labels.into_iter().collect(),
        link: a.link,
        host: a.host,
        host_selector: a.host_selector,
        placement: a.placement.map(|p| match p {
            PlacementArg::Spread => PlacementPolicy::Spread,
            PlacementArg::Binpack => PlacementPolicy::Binpack,
        }),
        failover: a.failover.then_some(true),
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
    let parameters = Template::parse_kernel_parameters("--kernel-parameters", parameters)?;
    // Names are distinct: every placeholder is the index plus a fixed offset.
    (1..=u64::from(count))
        .map(|i| Ok((name_template.expand(i)?, parameters.expand(i)?)))
        .collect()
}

/// `DEVICE=BRIDGE`.
fn parse_net(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((d, b)) if !d.is_empty() && !b.is_empty() => Ok((d.to_string(), b.to_string())),
        _ => Err(format!(
            "{s:?}: expected DEVICE=NAME, e.g. service=br0 or service=lab"
        )),
    }
}

/// `never`, `on-failure[:N]`, `always[:N]`.
fn parse_restart(s: &str) -> Result<(rhyzome_api::RestartMode, Option<u32>), String> {
    use rhyzome_api::RestartMode;
    let (mode, max) = match s.split_once(':') {
        Some((m, n)) => (
            m,
            Some(n.parse::<u32>().map_err(|_| {
                format!("{n:?} is not a number of retries (expected e.g. on-failure:5)")
            })?),
        ),
        None => (s, None),
    };
    let mode = match mode {
        "never" | "no" => RestartMode::Never,
        "on-failure" | "on_failure" => RestartMode::OnFailure,
        "always" => RestartMode::Always,
        _ => {
            return Err(format!(
                "{mode:?} is not a restart policy: use never, on-failure[:N] or always[:N]"
            ))
        }
    };
    if mode == RestartMode::Never && max.is_some() {
        return Err("never takes no retry count".into());
    }
    Ok((mode, max))
}

pub(crate) fn parse_link(s: &str) -> Result<rhyzome_api::LinkConditions, String> {
    rhyzome_api::validate::parse_conditions(s).map_err(|e| e.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    rhyzome_api::validate::parse_label(s).map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhyzome_api::RestartMode;

    #[test]
    fn restart_policies_parse() {
        assert_eq!(parse_restart("never"), Ok((RestartMode::Never, None)));
        assert_eq!(
            parse_restart("on-failure"),
            Ok((RestartMode::OnFailure, None))
        );
        assert_eq!(
            parse_restart("on-failure:3"),
            Ok((RestartMode::OnFailure, Some(3)))
        );
        assert_eq!(
            parse_restart("always:10"),
            Ok((RestartMode::Always, Some(10)))
        );
        assert!(parse_restart("sometimes").is_err());
        assert!(parse_restart("on-failure:x").is_err());
        assert!(parse_restart("never:2").is_err());
    }
}
