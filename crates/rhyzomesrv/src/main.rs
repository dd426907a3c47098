//! `rhyzomesrv` binary: argument parsing and logging only; everything else is in the library.

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use rhyzomesrv::config::{Config, DEFAULT_CONFIG_FILE};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "rhyzomesrv",
    version,
    about = "Rhyzome daemon: runs unikernels as libvirt guests"
)]
struct Args {
    /// Configuration file (JSON). Default: ./rhyzome.conf, or built-in defaults if it is absent.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Check the configuration file and print the effective settings.
    CheckConfig,
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Manage API tokens (creating the first one turns authentication on).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make TLS certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Print a shell completion script.
    Completions {
        /// Shell to generate completions for.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (one per command) into a directory; used to build the package.
    #[command(hide = true)]
    Man {
        #[arg(long)]
        out_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (it is shown only this once).
    Create {
        /// Name of the token (who holds it).
        #[arg(long)]
        name: String,
        /// metrics (GET /metrics only), viewer (read), operator (create/delete within quota)
        /// or admin (everything).
        #[arg(long, default_value = "operator")]
        role: String,
        /// Scope the token to instances whose names start with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Quota: most instances at once.
        #[arg(long)]
        max_instances: Option<u32>,
        /// Quota: most guest memory in total, MiB.
        #[arg(long)]
        max_total_memory_mib: Option<u64>,
        /// Quota: most guest memory per instance, MiB.
        #[arg(long)]
        max_instance_memory_mib: Option<u32>,
        /// Bridges the token's instances may join (repeatable; default: any).
        #[arg(long = "bridge")]
        bridges: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token; it stops working at the next request.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Write a self-signed cert.pem and key.pem for a home server and print its fingerprint.
    Create {
        /// Directory to write into.
        #[arg(long, default_value = "/var/lib/rhyzome/tls")]
        out_dir: PathBuf,
        /// Host names and IP addresses the certificate is for (repeatable).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rhyzomesrv::logging::init();
    match &args.command {
        Some(Command::Openapi) => {
            print!("{}", rhyzomesrv::http::openapi_json());
            return Ok(());
        }
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                *shell,
                &mut Args::command(),
                "rhyzomesrv",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Some(Command::Man { out_dir }) => {
            std::fs::create_dir_all(out_dir)
                .with_context(|| format!("cannot create {}", out_dir.display()))?;
            clap_mangen::generate_to(Args::command(), out_dir)
                .with_context(|| format!("cannot write manual pages to {}", out_dir.display()))?;
            return Ok(());
        }
        _ => {}
    }
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let config = Config::load(&path, explicit)?;
    // SIGHUP re-reads the file the daemon started from; with built-in defaults there is none.
    let reload_from = (explicit || path.exists()).then(|| path.clone());
    match args.command {
        Some(Command::CheckConfig) => {
            // What the file alone cannot tell: whether SocketGroup names a group here.
            if let Some(socket) = &config.socket {
                rhyzomesrv::http::local_socket::check(socket)?;
            }
            println!("{config:#?}");
            // Derived at start-up, not configured: what `serve` would run with here.
            let open_files = rhyzomesrv::http::server::raise_open_file_limit();
            println!(
                "open-file limit {open_files}: at most {} connections at once",
                rhyzomesrv::http::server::connection_limit(open_files)
            );
            return Ok(());
        }
        Some(Command::Token(cmd)) => return token(&config, cmd),
        Some(Command::Cert(CertCommand::Create { out_dir, hosts })) => {
            let fingerprint = rhyzomesrv::tls::create_self_signed(&out_dir, &hosts)?;
            println!("wrote {0}/cert.pem and {0}/key.pem", out_dir.display());
            println!("fingerprint: {fingerprint}");
            println!(
                "add to rhyzome.conf: \"TLSCert\": \"{0}/cert.pem\", \"TLSKey\": \"{0}/key.pem\"",
                out_dir.display()
            );
            println!(
                "clients: rhyzomectl --ca {}/cert.pem (or --fingerprint {fingerprint})",
                out_dir.display()
            );
            return Ok(());
        }
        _ => {}
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(rhyzomesrv::daemon::run(config, reload_from))?;
    Ok(())
}

fn token(config: &Config, cmd: TokenCommand) -> anyhow::Result<()> {
    use rhyzomesrv::auth::{tokens::TokenStore, Quota, Role};
    let store = TokenStore::open(&config.state_dir)?;
    match cmd {
        TokenCommand::Create {
            name,
            role,
            prefix,
            max_instances,
            max_total_memory_mib,
            max_instance_memory_mib,
            bridges,
        } => {
            let role = Role::parse(&role).with_context(|| {
                format!("--role {role:?}: use metrics, viewer, operator or admin")
            })?;
            if let Some(p) = &prefix {
                rhyzome_api::validate::validate_name(p.trim_end_matches('-'))
                    .map_err(|e| anyhow::anyhow!("--prefix {p:?}: {}", e.message))?;
            }
            let quota = Quota {
                max_instances,
                max_total_memory_mib,
                max_instance_memory_mib,
                bridges: (!bridges.is_empty()).then_some(bridges),
            };
            let first = !store.any()?;
            let secret = store.create(&name, role, prefix.as_deref(), &quota)?;
            println!("{secret}");
            eprintln!("token {name:?} ({role}) created; it is shown only once.");
            if first {
                eprintln!(
                    "this is the first token: the API now requires a token for every request."
                );
            }
        }
        TokenCommand::List => {
            println!(
                "{:<20} {:<9} {:<12} {:<25} QUOTA",
                "NAME", "ROLE", "PREFIX", "CREATED"
            );
            for t in store.list()? {
                println!(
                    "{:<20} {:<9} {:<12} {:<25} {}",
                    t.name,
                    t.role,
                    t.prefix.as_deref().unwrap_or("-"),
                    t.created_at,
                    serde_json::to_string(&t.quota)?
                );
            }
        }
        TokenCommand::Revoke { name } => {
            store.revoke(&name)?;
            println!("revoked {name}");
        }
    }
    Ok(())
}
