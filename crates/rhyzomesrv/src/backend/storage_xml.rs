//! Renders the libvirt XML of storage pools and volumes. Written with an XML writer that
//! escapes every text and attribute value (a pool's path comes from the configuration).
//! Pure functions; no I/O.

use super::storage::VolumeFormat;
use quick_xml::events::BytesText;
use quick_xml::Writer;

type W = Writer<Vec<u8>>;

fn text_element(w: &mut W, name: &str, text: &str) -> std::io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(text))?;
    Ok(())
}

fn finish(w: W) -> String {
    String::from_utf8(w.into_inner()).expect("the writer was only given UTF-8")
}

/// A `dir` pool named `name` whose volumes are files in `path`, owner-only: volumes hold
/// tenants' data.
pub fn dir_pool(name: &str, path: &str) -> std::io::Result<String> {
    dir_pool_with_mode(name, path, "0700")
}

/// A `dir` pool whose directory has the octal permissions `mode`.
pub fn dir_pool_with_mode(name: &str, path: &str, mode: &str) -> std::io::Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.create_element("pool")
        .with_attribute(("type", "dir"))
        .write_inner_content(|w| {
            text_element(w, "name", name)?;
            w.create_element("target").write_inner_content(|w| {
                text_element(w, "path", path)?;
                w.create_element("permissions").write_inner_content(|w| {
                    text_element(w, "mode", mode)?;
                    Ok::<_, std::io::Error>(())
                })?;
                Ok::<_, std::io::Error>(())
            })?;
            Ok::<_, std::io::Error>(())
        })?;
    Ok(finish(w))
}

/// A volume of `capacity` bytes, sparse (allocation 0), optionally the copy-on-write child
/// of the volume at `backing_path`.
pub fn volume(
    name: &str,
    capacity: u64,
    format: VolumeFormat,
    backing: Option<(&str, VolumeFormat)>,
) -> std::io::Result<String> {
    volume_with_mode(name, capacity, format, backing, "0600")
}

/// Like [`volume`], with the file's octal permissions `mode` (owner-only there).
pub fn volume_with_mode(
    name: &str,
    capacity: u64,
    format: VolumeFormat,
    backing: Option<(&str, VolumeFormat)>,
    mode: &str,
) -> std::io::Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let capacity = capacity.to_string();
    w.create_element("volume").write_inner_content(|w| {
        text_element(w, "name", name)?;
        w.create_element("capacity")
            .with_attribute(("unit", "bytes"))
            .write_text_content(BytesText::new(&capacity))?;
        w.create_element("allocation")
            .with_attribute(("unit", "bytes"))
            .write_text_content(BytesText::new("0"))?;
        w.create_element("target").write_inner_content(|w| {
            w.create_element("format")
                .with_attribute(("type", format.as_str()))
                .write_empty()?;
            w.create_element("permissions").write_inner_content(|w| {
                text_element(w, "mode", mode)?;
                Ok::<_, std::io::Error>(())
            })?;
            Ok::<_, std::io::Error>(())
        })?;
        if let Some((path, base_format)) = backing {
            w.create_element("backingStore").write_inner_content(|w| {
                text_element(w, "path", path)?;
                w.create_element("format")
                    .with_attribute(("type", base_format.as_str()))
                    .write_empty()?;
                Ok::<_, std::io::Error>(())
            })?;
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(finish(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_path_stays_text() {
        let xml = dir_pool("rhyzome-x", "/srv/a</path><evil/>").unwrap();
        assert!(
            xml.contains("<path>/srv/a&lt;/path&gt;&lt;evil/&gt;</path>"),
            "{xml}"
        );
        assert!(!xml.contains("<evil/>"));
    }

    #[test]
    fn a_clone_names_its_base_as_backing_store() {
        let xml = volume(
            "rhyzome-vol-1",
            1 << 20,
            VolumeFormat::Qcow2,
            Some(("/p/base & co", VolumeFormat::Raw)),
        )
        .unwrap();
        assert!(
            xml.contains("<capacity unit=\"bytes\">1048576</capacity>"),
            "{xml}"
        );
        assert!(xml.contains("<format type=\"qcow2\"/>"), "{xml}");
        assert!(
            xml.contains(
                "<backingStore>\n    <path>/p/base &amp; co</path>\n    <format type=\"raw\"/>"
            ),
            "{xml}"
        );
    }

    #[test]
    fn a_plain_volume_has_no_backing_store() {
        let xml = volume("v", 512, VolumeFormat::Raw, None).unwrap();
        assert!(!xml.contains("backingStore"), "{xml}");
        assert!(xml.contains("<format type=\"raw\"/>"), "{xml}");
    }
}
