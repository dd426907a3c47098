//! Image metadata and which image an instance was created from, in the same SQLite database
//! as instances. (An instance's NICs, whether its image declares them or not, are
//! [`super::attachments`].)
//!
//! The tables are part of the versioned schema (`IMAGE_TABLES` in the parent module, since
//! version 4). Each table's columns are listed once here and read by name. Rows of an
//! instance are removed with it (`ON DELETE CASCADE`). The same connection mutex as
//! [`Store`] serialises access.
//!
//! Content is stored once, whoever uploads it; each name (`image_tags` row) records when it
//! was given (`tagged_at`), so that a tenant is shown the time of its own upload, never
//! another tenant's (see docs/security.md, "Images").

use super::{Store, StoreError};
use rhyzome_api::ImageInspection;
use rusqlite::{named_params, params, OptionalExtension};
use std::collections::HashSet;

/// The columns of `images`, in every write and read of a whole image.
const IMAGE_COLUMNS: &str = "sha256, size, uploaded_at, inspection";

/// Writes which image an instance boots, inside the caller's transaction (see
/// [`Store::insert_with_boot`]).
pub(super) fn write_boot(
    tx: &rusqlite::Transaction<'_>,
    instance_id: &str,
    image: Option<&str>,
) -> Result<(), StoreError> {
    if let Some(image) = image {
        tx.execute(
            "INSERT OR REPLACE INTO instance_images (instance_id, image) VALUES (?1, ?2)",
            [instance_id, image],
        )?;
    }
    Ok(())
}

/// An image as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub sha256: String,
    pub size: u64,
    pub uploaded_at: String,
    pub inspection: ImageInspection,
    /// `name:tag`, sorted.
    pub names: Vec<String>,
    /// When each name was given, by `name:tag` (absent for names from older databases).
    pub tagged_at: std::collections::HashMap<String, String>,
}

impl Store {
    /// Records an image unless its digest is already known; returns whether it was new.
    pub fn insert_image(
        &self,
        sha256: &str,
        size: u64,
        uploaded_at: &str,
        inspection: &ImageInspection,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            &format!(
                "INSERT OR IGNORE INTO images ({IMAGE_COLUMNS}) \
                 VALUES (:sha256, :size, :uploaded_at, :inspection)"
            ),
            named_params! {
                ":sha256": sha256,
                ":size": size as i64,
                ":uploaded_at": uploaded_at,
                ":inspection": super::encoding::inspection_to_sql(inspection),
            },
        )?;
        Ok(n == 1)
    }

    /// Points `name:tag` at `sha256` (moving it if it pointed elsewhere), recording `at` as
    /// the time of the name unless it already named this image.
    pub fn tag_image(
        &self,
        name: &str,
        tag: &str,
        sha256: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO image_tags (name, tag, sha256, tagged_at) \
             VALUES (:name, :tag, :sha256, :tagged_at) \
             ON CONFLICT (name, tag) DO UPDATE SET sha256 = excluded.sha256, \
             tagged_at = CASE WHEN image_tags.sha256 = excluded.sha256 \
                 THEN image_tags.tagged_at ELSE excluded.tagged_at END",
            named_params! {
                ":name": name,
                ":tag": tag,
                ":sha256": sha256,
                ":tagged_at": at,
            },
        )?;
        Ok(())
    }

    /// Removes the names of `sha256` that start with `prefix`; returns how many.
    pub fn untag_image(&self, sha256: &str, prefix: &str) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM image_tags WHERE sha256 = ?1 AND substr(name, 1, length(?2)) = ?2",
            params![sha256, prefix],
        )?)
    }

    pub fn resolve_tag(&self, name: &str, tag: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT sha256 FROM image_tags WHERE name = ?1 AND tag = ?2",
                [name, tag],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn image(&self, sha256: &str) -> Result<Option<ImageRow>, StoreError> {
        Ok(self.images_where(Some(sha256))?.pop())
    }

    /// Every image, newest first.
    pub fn images(&self) -> Result<Vec<ImageRow>, StoreError> {
        self.images_where(None)
    }

    fn images_where(&self, sha256: Option<&str>) -> Result<Vec<ImageRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images \
             WHERE ?1 IS NULL OR sha256 = ?1 ORDER BY uploaded_at DESC, sha256"
        ))?;
        let rows = stmt
            .query_map([sha256], |r| {
                Ok((
                    r.get::<_, String>("sha256")?,
                    r.get::<_, i64>("size")?,
                    r.get::<_, String>("uploaded_at")?,
                    r.get::<_, String>("inspection")?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut tags = conn.prepare_cached(
            "SELECT name || ':' || tag AS reference, tagged_at FROM image_tags \
             WHERE sha256 = ?1 ORDER BY name, tag",
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (sha256, size, uploaded_at, inspection) in rows {
            let inspection = super::encoding::inspection_from_sql(inspection)?;
            let named = tags
                .query_map([&sha256], |r| {
                    Ok((
                        r.get::<_, String>("reference")?,
                        r.get::<_, Option<String>>("tagged_at")?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let tagged_at = named
                .iter()
                .filter_map(|(n, at)| Some((n.clone(), at.clone()?)))
                .collect();
            out.push(ImageRow {
                sha256,
                size: size as u64,
                uploaded_at,
                inspection,
                names: named.into_iter().map(|(n, _)| n).collect(),
                tagged_at,
            });
        }
        Ok(out)
    }

    /// Removes an image and its tags.
    pub fn delete_image(&self, sha256: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM images WHERE sha256 = ?1", [sha256])?;
        Ok(())
    }

    /// Digests of all images (their blobs must survive garbage collection).
    pub fn image_digests(&self) -> Result<HashSet<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT sha256 FROM images")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Names of the instances that boot `sha256` (including any being deleted: their blob is
    /// still in use until they are gone).
    pub fn instances_booting(&self, sha256: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT name FROM instances WHERE kernel_sha256 = ?1 ORDER BY name")?;
        let rows = stmt.query_map([sha256], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the image reference an instance was created from, and its NICs when the image
    /// declares several network devices.
    pub fn instance_image(&self, instance_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT image FROM instance_images WHERE instance_id = ?1",
                [instance_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The image reference of every instance created from one, by instance id: one query for
    /// a whole listing instead of one per instance.
    pub fn all_instance_images(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT instance_id, image FROM instance_images")?;
        let rows = stmt.query_map([], |r| Ok((r.get("instance_id")?, r.get("image")?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhyzome_api::ImageFormat;

    fn inspection() -> ImageInspection {
        ImageInspection {
            format: ImageFormat::Multiboot,
            elf_class: Some(32),
            multiboot_aout_kludge: Some(false),
            description: "32-bit ELF, multiboot v1".into(),
            solo5: None,
            problem: None,
        }
    }

    #[test]
    fn names_keep_the_time_they_were_given_and_older_databases_gain_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            // image_tags as it was before names had a time.
            let conn = super::super::open_database(dir.path()).unwrap();
            conn.execute_batch(
                "CREATE TABLE images (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, \
                 uploaded_at TEXT NOT NULL, inspection TEXT NOT NULL); \
                 CREATE TABLE image_tags (name TEXT NOT NULL, tag TEXT NOT NULL, \
                 sha256 TEXT NOT NULL REFERENCES images(sha256) ON DELETE CASCADE, \
                 PRIMARY KEY (name, tag));",
            )
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        s.insert_image("aa", 3, "t0", &inspection()).unwrap();
        s.tag_image("new", "1", "aa", "t1").unwrap();
        // Naming the same image again keeps the first time; moving a name renews it.
        s.tag_image("new", "1", "aa", "t2").unwrap();
        let times = |s: &Store| s.images().unwrap()[0].tagged_at.clone();
        assert_eq!(times(&s), [("new:1".to_string(), "t1".to_string())].into());
        s.insert_image("bb", 3, "t3", &inspection()).unwrap();
        s.tag_image("new", "1", "bb", "t4").unwrap();
        assert_eq!(
            s.image("bb").unwrap().unwrap().tagged_at,
            [("new:1".to_string(), "t4".to_string())].into()
        );
    }

    #[test]
    fn images_tags_and_instance_rows() {
        let s = Store::in_memory().unwrap();
        assert!(s
            .insert_image("aa", 3, "2026-01-01T00:00:00Z", &inspection())
            .unwrap());
        assert!(!s
            .insert_image("aa", 3, "2026-01-02T00:00:00Z", &inspection())
            .unwrap());
        s.insert_image("bb", 4, "2026-01-03T00:00:00Z", &inspection())
            .unwrap();
        s.tag_image("web", "1.0", "aa", "t1").unwrap();
        s.tag_image("web", "latest", "aa", "t1").unwrap();
        assert_eq!(
            s.image("aa").unwrap().unwrap().names,
            ["web:1.0", "web:latest"]
        );
        s.tag_image("web", "latest", "bb", "t2").unwrap();
        assert_eq!(
            s.resolve_tag("web", "latest").unwrap().as_deref(),
            Some("bb")
        );
        assert_eq!(s.images().unwrap()[0].sha256, "bb");
        s.delete_image("bb").unwrap();
        assert_eq!(s.resolve_tag("web", "latest").unwrap(), None);
        assert_eq!(s.image_digests().unwrap(), ["aa".to_string()].into());

        let mut r = crate::store::tests::record("a", "02:00:00:00:01:03");
        r.kernel_sha256 = "aa".into();
        let nic = |d: &str, slot| crate::store::attachments::Attachment {
            device: Some(d.into()),
            bridge: "br0".into(),
            mac: format!("02:00:00:00:01:0{slot}"),
            pci_slot: Some(slot),
            conditions: Default::default(),
            network: None,
            address: None,
            emulator_port: None,
        };
        r.attachments = vec![nic("service", 3), nic("admin", 4)];
        s.insert_with_boot(&r, Some("web:1.0"), &[]).unwrap();
        assert_eq!(s.instances_booting("aa").unwrap(), ["a"]);
        // A MAC of another instance's extra NIC is taken, as is its first one.
        for taken in ["02:00:00:00:01:04", "02:00:00:00:01:03"] {
            let mut other = crate::store::tests::record("b", taken);
            other.id = "id-b".into();
            assert!(matches!(s.insert(&other), Err(StoreError::MacTaken(m)) if m == taken));
        }
        assert_eq!(s.instance_image(&r.id).unwrap().as_deref(), Some("web:1.0"));
        assert_eq!(
            s.by_name("a").unwrap().unwrap().attachments[1]
                .device
                .as_deref(),
            Some("admin")
        );
        s.remove(&r.id).unwrap();
        assert!(crate::store::attachments::of_instance(&s.conn(), &r.id)
            .unwrap()
            .is_empty());
        assert_eq!(s.instance_image(&r.id).unwrap(), None);
    }
}
