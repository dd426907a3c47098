//! Image inspection: what kind of kernel a file is (multiboot ELF, Linux bzImage, plain ELF,
//! something else), and what its Solo5 notes say (ABI target, device manifest).
//!
//! Only the parts that matter are read (the first 8 KiB, the ELF program and section header
//! tables, and note contents, each bounded), never the whole file, so inspecting a large image
//! costs a few KiB of memory. ELF headers are decoded with `goblin`; the Solo5 note payloads
//! are decoded here, following the layout of Solo5's public `mft_abi.h` and `elf_abi.h`
//! (x86_64/aarch64 LP64 layout, which is the only one Solo5 builds). Pure functions over a
//! file handle; they block, so async callers use `spawn_blocking`.

use goblin::container::Ctx;
use goblin::elf::program_header::PT_NOTE;
use goblin::elf::section_header::SHT_NOTE;
use goblin::elf::{Elf, ProgramHeader, SectionHeader};
use rhyzome_api::{ImageFormat, ImageInspection, ManifestDevice, Solo5Info, Solo5Manifest};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Multiboot v1 header magic; the header must lie within the first 8 KiB, 4-byte aligned.
const MULTIBOOT_MAGIC: u32 = 0x1BAD_B002;
const MULTIBOOT_SEARCH: usize = 8192;
/// Flags bit 16: the header carries load addresses (the "a.out kludge").
const MULTIBOOT_AOUT_KLUDGE: u32 = 1 << 16;

/// Owner name of Solo5's notes, and their types ("ABI1", "MFT1" little-endian).
const SOLO5_NOTE_NAME: &[u8] = b"Solo5";
const ABI1_NOTE_TYPE: u32 = 0x3149_4241;
const MFT1_NOTE_TYPE: u32 = 0x3154_464d;
/// `struct mft_entry` on LP64: name[68], type u32, a 16-byte union, an 8-byte union, bool,
/// padded to 8.
const MFT_ENTRY_SIZE: usize = 104;
const MFT_NAME_SIZE: usize = 68;
const MFT_MAX_ENTRIES: usize = 64;
/// The manifest descriptor starts with 4 bytes of padding: `struct mft` is 8-aligned and the
/// note header before it is 20 bytes long.
const MFT_DESC_PADDING: usize = 4;

/// Note segments or sections larger than this are not Solo5's and are not read.
const MAX_NOTE_BYTES: u64 = 64 * 1024;
/// Header tables larger than this are not a kernel's.
const MAX_HEADER_TABLE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read the image: {0}")]
    Read(#[from] std::io::Error),
}

/// Inspects the file behind `file`.
pub fn inspect(file: &File) -> Result<ImageInspection, InspectError> {
    let len = file.metadata()?.len();
    let mut head = vec![0u8; MULTIBOOT_SEARCH.min(len as usize)];
    file.read_exact_at(&mut head, 0)?;
    let multiboot = find_multiboot(&head);
    if head.starts_with(b"\x7fELF") {
        return Ok(inspect_elf(file, len, &head, multiboot));
    }
    if head.get(0x202..0x206) == Some(b"HdrS") {
        return Ok(ImageInspection {
            format: ImageFormat::LinuxBzimage,
            elf_class: None,
            multiboot_aout_kludge: None,
            description: "Linux kernel (bzImage)".into(),
            solo5: None,
            problem: None,
        });
    }
    Ok(ImageInspection {
        format: ImageFormat::Other,
        elf_class: None,
        multiboot_aout_kludge: None,
        description: "not a kernel: neither an ELF file nor a Linux bzImage".into(),
        solo5: None,
        problem: Some(
            "this is not a kernel (neither an ELF file nor a Linux bzImage); use a Solo5 \
             virtio unikernel (for MirageOS: `mirage configure -t virtio`) or another \
             multiboot kernel"
                .into(),
        ),
    })
}

/// The flags of a valid multiboot v1 header in `head`, if there is one.
fn find_multiboot(head: &[u8]) -> Option<u32> {
    head.chunks_exact(4)
        .enumerate()
        .filter(|(_, c)| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) == MULTIBOOT_MAGIC)
        .find_map(|(i, _)| {
            let at = i * 4;
            let word = |o: usize| {
                head.get(at + o..at + o + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            };
            let (magic, flags, checksum) = (word(0)?, word(4)?, word(8)?);
            (magic.wrapping_add(flags).wrapping_add(checksum) == 0).then_some(flags)
        })
}

fn inspect_elf(file: &File, len: u64, head: &[u8], multiboot: Option<u32>) -> ImageInspection {
    let class = match head.get(4) {
        Some(1) => Some(32),
        Some(2) => Some(64),
        _ => None,
    };
    let kludge = multiboot.map(|f| f & MULTIBOOT_AOUT_KLUDGE != 0);
    let solo5 = read_notes(file, len, head).and_then(|notes| solo5_from_notes(&notes));
    let bits = class
        .map(|c| format!("{c}-bit ELF"))
        .unwrap_or("ELF".into());
    let (format, description) = match kludge {
        Some(true) => (
            ImageFormat::Multiboot,
            format!("{bits}, multiboot v1 with a.out kludge"),
        ),
        Some(false) => (ImageFormat::Multiboot, format!("{bits}, multiboot v1")),
        None => (
            ImageFormat::Elf,
            format!("{bits} without a multiboot header"),
        ),
    };
    let target = solo5.as_ref().and_then(|s| s.abi_target.clone());
    let problem = if let Some(t) = target.as_deref().filter(|t| *t != "virtio") {
        Some(match t {
            "hvt" | "spt" => format!(
                "built for the Solo5 {t} target, which runs only under the solo5-{t} tender, \
                 not as a libvirt/QEMU guest; rebuild the unikernel for the virtio target \
                 (for MirageOS: `mirage configure -t virtio`)"
            ),
            _ => format!(
                "built for the Solo5 {t} target, which libvirt/QEMU cannot run; rebuild the \
                 unikernel for the virtio target (for MirageOS: `mirage configure -t virtio`)"
            ),
        })
    } else if Elf::parse_header(head).is_err() {
        // Too short or damaged to tell; let QEMU decide, as before inspection existed.
        None
    } else {
        match kludge {
            None => Some(
                "an ELF file without a multiboot header, which QEMU cannot boot with -kernel; \
                 use a Solo5 virtio unikernel (for MirageOS: `mirage configure -t virtio`) or \
                 another multiboot kernel"
                    .into(),
            ),
            Some(false) if class == Some(64) => Some(
                "a 64-bit multiboot ELF without the a.out kludge, which QEMU refuses to load; \
                 link it as a 32-bit ELF or set the a.out kludge (as Solo5 virtio images do)"
                    .into(),
            ),
            _ => None,
        }
    };
    ImageInspection {
        format,
        elf_class: class,
        multiboot_aout_kludge: kludge,
        description,
        solo5,
        problem,
    }
}

fn read_at(file: &File, len: u64, offset: u64, size: u64, cap: u64) -> Option<Vec<u8>> {
    if size == 0 || size > cap || offset.checked_add(size)? > len {
        return None;
    }
    let mut buf = vec![0u8; size as usize];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

/// The contents of every PT_NOTE segment and SHT_NOTE section (stripped images keep at least
/// one of the two), with the file's endianness.
fn read_notes(file: &File, len: u64, head: &[u8]) -> Option<Vec<(Vec<u8>, bool)>> {
    let header = Elf::parse_header(head).ok()?;
    let container = header.container().ok()?;
    let endian = header.endianness().ok()?;
    let little = endian.is_little();
    let ctx = Ctx::new(container, endian);
    let mut notes = Vec::new();
    let phsize = header.e_phentsize as u64 * header.e_phnum as u64;
    if let Some(table) = read_at(file, len, header.e_phoff, phsize, MAX_HEADER_TABLE_BYTES) {
        if let Ok(phdrs) = ProgramHeader::parse(&table, 0, header.e_phnum as usize, ctx) {
            for ph in phdrs.iter().filter(|p| p.p_type == PT_NOTE) {
                if let Some(b) = read_at(file, len, ph.p_offset, ph.p_filesz, MAX_NOTE_BYTES) {
                    notes.push((b, little));
                }
            }
        }
    }
    let shsize = header.e_shentsize as u64 * header.e_shnum as u64;
    if let Some(table) = read_at(file, len, header.e_shoff, shsize, MAX_HEADER_TABLE_BYTES) {
        if let Ok(shdrs) = SectionHeader::parse(&table, 0, header.e_shnum as usize, ctx) {
            for sh in shdrs.iter().filter(|s| s.sh_type == SHT_NOTE) {
                if let Some(b) = read_at(file, len, sh.sh_offset, sh.sh_size, MAX_NOTE_BYTES) {
                    notes.push((b, little));
                }
            }
        }
    }
    Some(notes)
}

/// Splits a note area into (name, type, descriptor) triples. Solo5 aligns to 4 bytes.
fn parse_notes(bytes: &[u8], little: bool) -> Vec<(&[u8], u32, &[u8])> {
    let word = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let align = |n: usize| n.div_ceil(4) * 4;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 12 <= bytes.len() {
        let namesz = word(&bytes[at..]) as usize;
        let descsz = word(&bytes[at + 4..]) as usize;
        let kind = word(&bytes[at + 8..]);
        let name_at = at + 12;
        let desc_at = name_at + align(namesz);
        let end = desc_at.saturating_add(align(descsz));
        if desc_at + descsz > bytes.len() || namesz > 256 {
            break;
        }
        let name = &bytes[name_at..name_at + namesz];
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        out.push((name, kind, &bytes[desc_at..desc_at + descsz]));
        at = end;
    }
    out
}

fn solo5_from_notes(areas: &[(Vec<u8>, bool)]) -> Option<Solo5Info> {
    let mut info = Solo5Info {
        abi_target: None,
        abi_version: None,
        manifest: None,
    };
    let mut found = false;
    for (bytes, little) in areas {
        for (name, kind, desc) in parse_notes(bytes, *little) {
            if name != SOLO5_NOTE_NAME {
                continue;
            }
            let word = |o: usize| {
                desc.get(o..o + 4).map(|b| {
                    let a = [b[0], b[1], b[2], b[3]];
                    if *little {
                        u32::from_le_bytes(a)
                    } else {
                        u32::from_be_bytes(a)
                    }
                })
            };
            match kind {
                ABI1_NOTE_TYPE if info.abi_target.is_none() => {
                    if let (Some(target), Some(version)) = (word(0), word(4)) {
                        info.abi_target = Some(abi_target_name(target));
                        info.abi_version = Some(version);
                        found = true;
                    }
                }
                MFT1_NOTE_TYPE if info.manifest.is_none() => {
                    if let Some(m) = parse_manifest(desc, little) {
                        info.manifest = Some(m);
                        found = true;
                    }
                }
                _ => {}
            }
        }
    }
    found.then_some(info)
}

fn abi_target_name(t: u32) -> String {
    match t {
        1 => "hvt".into(),
        2 => "spt".into(),
        3 => "virtio".into(),
        4 => "muen".into(),
        5 => "genode".into(),
        6 => "xen".into(),
        n => format!("unknown({n})"),
    }
}

/// Decodes a `struct mft` (after its alignment padding). Entries of type
/// `MFT_RESERVED_FIRST`, which Solo5's elftool puts first, are not devices and are skipped.
fn parse_manifest(desc: &[u8], little: &bool) -> Option<Solo5Manifest> {
    let m = desc.get(MFT_DESC_PADDING..)?;
    let word = |b: &[u8], o: usize| {
        b.get(o..o + 4).map(|b| {
            let a = [b[0], b[1], b[2], b[3]];
            if *little {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        })
    };
    let version = word(m, 0)?;
    let entries = word(m, 4)? as usize;
    if entries > MFT_MAX_ENTRIES || m.len() < 8 + entries * MFT_ENTRY_SIZE {
        return None;
    }
    let mut devices = Vec::new();
    for i in 0..entries {
        let e = &m[8 + i * MFT_ENTRY_SIZE..8 + (i + 1) * MFT_ENTRY_SIZE];
        let raw = &e[..MFT_NAME_SIZE];
        let name_len = raw.iter().position(|&b| b == 0).unwrap_or(MFT_NAME_SIZE);
        let name = String::from_utf8_lossy(&raw[..name_len]).into_owned();
        let kind = match word(e, MFT_NAME_SIZE)? {
            1 => "BLOCK_BASIC".to_string(),
            2 => "NET_BASIC".to_string(),
            0x4000_0000 => continue,
            n => format!("UNKNOWN({n})"),
        };
        devices.push(ManifestDevice { name, kind });
    }
    Some(Solo5Manifest { version, devices })
}

/// Builders of Solo5-style notes and small ELF images, for tests here and elsewhere.
pub mod testdata {
    /// A Solo5 "ABI1" note for `target` (1 hvt, 2 spt, 3 virtio, ...).
    pub fn abi_note(target: u32) -> Vec<u8> {
        let mut n = note_header(16, 0x3149_4241);
        for w in [target, 1, 0, 0] {
            n.extend_from_slice(&w.to_le_bytes());
        }
        n
    }

    /// A Solo5 virtio image (64-bit, multiboot with the a.out kludge) with these NET devices;
    /// `salt` makes images with the same devices differ.
    pub fn virtio_image(nets: &[&str], salt: u8) -> Vec<u8> {
        let mut notes = abi_note(3);
        let devices: Vec<(&str, u32)> = nets.iter().map(|n| (*n, 2)).collect();
        notes.extend(manifest_note(&devices));
        let mut img = elf64(&notes, true);
        img.push(salt);
        img
    }

    /// A Solo5 "MFT1" note with a reserved first entry and then `devices` (name, 1 = block,
    /// 2 = net), laid out as on x86_64.
    pub fn manifest_note(devices: &[(&str, u32)]) -> Vec<u8> {
        let entries = devices.len() + 1;
        let descsz = 4 + 8 + entries * 104;
        let mut n = note_header(descsz as u32, 0x3154_464d);
        n.extend_from_slice(&[0; 4]);
        n.extend_from_slice(&1u32.to_le_bytes());
        n.extend_from_slice(&(entries as u32).to_le_bytes());
        let entry = |name: &str, kind: u32| {
            let mut e = vec![0u8; 104];
            e[..name.len()].copy_from_slice(name.as_bytes());
            e[68..72].copy_from_slice(&kind.to_le_bytes());
            e
        };
        n.extend(entry("", 1 << 30));
        for (name, kind) in devices {
            n.extend(entry(name, *kind));
        }
        n
    }

    fn note_header(descsz: u32, kind: u32) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&6u32.to_le_bytes());
        n.extend_from_slice(&descsz.to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(b"Solo5\0\0\0");
        n
    }

    /// A minimal 64-bit little-endian x86_64 ELF: header, one PT_NOTE program header over
    /// `notes`, and, with `multiboot`, a multiboot v1 header with the a.out kludge (like a
    /// Solo5 virtio image). Not runnable; enough for inspection.
    pub fn elf64(notes: &[u8], multiboot: bool) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little-endian
        f[6] = 1; // EV_CURRENT
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        f[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        if multiboot {
            let flags: u32 = 0x0001_0003;
            let magic: u32 = 0x1BAD_B002;
            for w in [magic, flags, 0u32.wrapping_sub(magic.wrapping_add(flags))] {
                f.extend_from_slice(&w.to_le_bytes());
            }
            f.extend_from_slice(&[0; 20]);
        }
        let note_at = f.len() as u64;
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        f[ph + 4..ph + 8].copy_from_slice(&4u32.to_le_bytes()); // PF_R
        f[ph + 8..ph + 16].copy_from_slice(&note_at.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        f[ph + 40..ph + 48].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        f[ph + 48..ph + 56].copy_from_slice(&4u64.to_le_bytes());
        f.extend_from_slice(notes);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;
    use std::io::Write;

    fn inspect_bytes(b: &[u8]) -> ImageInspection {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b).unwrap();
        inspect(&f).unwrap()
    }

    #[test]
    fn solo5_virtio_image_with_manifest() {
        let mut notes = abi_note(3);
        notes.extend(manifest_note(&[("service", 2), ("admin", 2), ("disk", 1)]));
        let i = inspect_bytes(&elf64(&notes, true));
        assert_eq!(i.format, ImageFormat::Multiboot);
        assert_eq!(
            (i.elf_class, i.multiboot_aout_kludge),
            (Some(64), Some(true))
        );
        assert_eq!(i.problem, None, "{i:?}");
        let s = i.solo5.unwrap();
        assert_eq!(s.abi_target.as_deref(), Some("virtio"));
        let m = s.manifest.unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(m.net_devices(), vec!["service", "admin"]);
        assert_eq!(m.devices[2].kind, "BLOCK_BASIC");
    }

    #[test]
    fn the_project_test_kernels_declare_their_network_devices() {
        for (path, devices) in [
            (rhyzome_testkernel::kernel_path(), vec!["service"]),
            (
                rhyzome_testkernel::kernel_path_2nic(),
                vec!["service", "admin"],
            ),
        ] {
            let i = inspect(&File::open(&path).unwrap()).unwrap();
            assert_eq!(i.format, ImageFormat::Multiboot, "{}", path.display());
            assert_eq!(
                (i.elf_class, i.multiboot_aout_kludge),
                (Some(32), Some(false))
            );
            assert_eq!(i.problem, None);
            let s = i.solo5.unwrap();
            assert_eq!(
                (s.abi_target.as_deref(), s.abi_version),
                (Some("virtio"), Some(1))
            );
            assert_eq!(
                s.manifest.unwrap().net_devices(),
                devices,
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn hvt_and_spt_images_are_not_runnable() {
        for (t, name) in [(1, "hvt"), (2, "spt"), (6, "xen")] {
            let i = inspect_bytes(&elf64(&abi_note(t), false));
            assert_eq!(i.solo5.unwrap().abi_target.as_deref(), Some(name));
            let p = i.problem.unwrap();
            assert!(p.contains(name) && p.contains("virtio"), "{p}");
        }
    }

    #[test]
    fn other_files_are_named_for_what_they_are() {
        let i = inspect_bytes(b"hello, world");
        assert_eq!(i.format, ImageFormat::Other);
        assert!(i.problem.unwrap().contains("not a kernel"));
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let i = inspect_bytes(&bz);
        assert_eq!((i.format, i.problem), (ImageFormat::LinuxBzimage, None));
        // A plain ELF is recognised but cannot boot; a stub too short to parse is left to QEMU.
        let i = inspect_bytes(&elf64(&[], false));
        assert_eq!(i.format, ImageFormat::Elf);
        assert!(i.problem.unwrap().contains("multiboot"));
        assert_eq!(inspect_bytes(b"\x7fELF stub").problem, None);
        // Damaged notes do not break inspection.
        let mut bad = manifest_note(&[("a", 2)]);
        bad[4] = 0xff;
        let i = inspect_bytes(&elf64(&bad, true));
        assert_eq!(i.solo5, None);
    }
}
