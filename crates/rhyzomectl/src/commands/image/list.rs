//! `rhyzomectl image list`.

use super::Context;
use crate::output;

pub fn run(ctx: &Context) -> anyhow::Result<()> {
    let images = ctx.client()?.list_images()?;
    if ctx.json() {
        return output::json(&images);
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            vec![
                short_digest(&i.digest),
                super::names(i),
                crate::output::size(i.size),
                i.inspection
                    .solo5
                    .as_ref()
                    .and_then(|s| s.abi_target.clone())
                    .unwrap_or_else(|| "-".into()),
                i.uploaded_at.clone(),
            ]
        })
        .collect();
    output::table(&["DIGEST", "NAMES", "SIZE", "SOLO5", "UPLOADED"], &rows);
    Ok(())
}

/// `sha256:` and the first 12 hex digits, like container tools print them.
fn short_digest(d: &str) -> String {
    d.chars().take(7 + 12).collect()
}
