//! `rhyzomectl volume download NAME FILE`: streamed to a temporary file that takes FILE's
//! place only once complete. (FILE is positional, as in `upload`: `-o` is the global output
//! format.)

use super::Context;
use crate::commands::image::progress::Bar;
use crate::output;
use clap::Args;
use rhyzome_api::client::ProgressPhase;
use std::io::Write;

#[derive(Args)]
pub struct DownloadArgs {
    pub name: String,
    /// Where to write the content (`-`: standard output).
    #[arg(value_name = "FILE")]
    pub out: std::path::PathBuf,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(ctx: &Context, a: &DownloadArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let total = client.get_volume(&a.name)?.size_bytes;
    if a.out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        client.download_volume(&a.name, &mut lock, &mut |_| {})?;
        lock.flush()?;
        return Ok(());
    }
    // Beside FILE, so the final rename stays on one file system.
    let mut part = a.out.clone().into_os_string();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let file =
        std::fs::File::create(&part).map_err(|e| anyhow::anyhow!("{}: {e}", part.display()))?;
    let mut bar = Bar::new(total, a.quiet);
    let got = {
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
        let got = client.download_volume(&a.name, &mut writer, &mut |done| {
            bar.update(ProgressPhase::Downloading, done, total)
        });
        got.and_then(|n| {
            writer
                .flush()
                .map(|_| n)
                .map_err(|e| rhyzome_api::client::ClientError::Local(e.to_string()))
        })
    };
    bar.finish();
    let bytes = match got {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e.into());
        }
    };
    std::fs::rename(&part, &a.out).map_err(|e| anyhow::anyhow!("{}: {e}", a.out.display()))?;
    if ctx.json() {
        return output::json(&serde_json::json!({ "volume": a.name, "bytes": bytes }));
    }
    eprintln!("{}: {} to {}", a.name, output::size(bytes), a.out.display());
    Ok(())
}
