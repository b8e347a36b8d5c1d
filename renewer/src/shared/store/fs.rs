//! The store in a local directory: the embedded default, and what `make demo` uses.
//!
//! Every write goes to a temporary file in the target's directory and is then renamed (or
//! hard-linked, for create-if-absent) into place, so a reader never sees a partial file and a
//! crash leaves either the old or the new content. Secret objects are created 0600 from the
//! start (never chmod-ed after the content is written).
//!
//! Compare-and-swap needs a critical section between "read the current version" and "replace
//! it": that section holds an exclusive `flock` on a sidecar file (`.<name>.cas`). The kernel
//! drops the lock when a process dies, so a crashed renewer cannot wedge a lease.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{
    check_key, Generation, Listed, Object, ObjectStore, Precondition, Sensitivity, StoreError,
};

/// The store in a local directory: key `a/b` is the file `<root>/a/b`.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    location: String,
}

impl FsStore {
    /// A store rooted at `root` (created, 0700, when missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<FsStore, StoreError> {
        let root = root.into();
        let location = format!("file://{}", root.display());
        // 0700: the store holds private keys and the account credentials. Only a directory
        // created here gets the mode; an existing one is the operator's (and is left alone).
        if !root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .map_err(|e| {
                    StoreError::backend(
                        &location,
                        "",
                        format!("cannot create the store directory: {e}"),
                    )
                })?;
        }
        Ok(FsStore { root, location })
    }

    /// The directory the keys are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key).map_err(|m| self.err(key, m))?;
        Ok(self.root.join(key))
    }

    fn err(&self, key: &str, message: impl Into<String>) -> StoreError {
        StoreError::backend(&self.location, key, message)
    }

    fn io(&self, key: &str, what: &str, e: io::Error) -> StoreError {
        self.err(key, format!("{what}: {e}"))
    }

    fn precondition_failed(&self, key: &str) -> StoreError {
        StoreError::precondition_failed(&self.location, key)
    }

    fn read(&self, key: &str, path: &Path) -> Result<Option<Object>, StoreError> {
        match fs::read(path) {
            Ok(data) => Ok(Some(Object {
                generation: digest(&data),
                data,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(key, "read", e)),
        }
    }

    /// Write `data` to a fresh temporary file next to `path`, synced, with the right mode.
    fn write_temp(
        &self,
        key: &str,
        path: &Path,
        data: &[u8],
        sensitivity: Sensitivity,
    ) -> Result<PathBuf, StoreError> {
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| self.io(key, "create directory", e))?;
        let mode = match sensitivity {
            Sensitivity::Secret => 0o600,
            Sensitivity::Public => 0o644,
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for _ in 0..16 {
            let tmp = dir.join(format!(
                ".{file_name}.tmp-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp);
            let mut file = match file {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io(key, "create temporary file", e)),
            };
            let written = file
                .write_all(data)
                .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
                .and_then(|()| file.sync_all());
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(self.io(key, "write temporary file", e));
            }
            return Ok(tmp);
        }
        Err(self.err(key, "could not pick a temporary file name"))
    }

    fn sync_dir(&self, path: &Path) {
        // Make the rename durable; failure here is not worth failing the write for.
        if let Some(dir) = path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }

    /// Run `f` holding the exclusive compare-and-swap lock of `path`.
    fn with_cas_lock<T>(
        &self,
        key: &str,
        path: &Path,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| self.io(key, "create directory", e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let guard = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(format!(".{name}.cas")))
            .map_err(|e| self.io(key, "open lock file", e))?;
        guard.lock().map_err(|e| self.io(key, "lock", e))?;
        let result = f();
        let _ = guard.unlock();
        result
    }
}

fn digest(data: &[u8]) -> Generation {
    Generation(hex::encode(Sha256::digest(data)))
}

// The file system calls are quick and local; running them inline on the runtime thread keeps
// the code simple and the ordering of writes obvious.
#[async_trait]
impl ObjectStore for FsStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        let path = self.path(key)?;
        self.read(key, &path)
    }

    async fn put(
        &self,
        key: &str,
        data: &[u8],
        precondition: Precondition,
        sensitivity: Sensitivity,
    ) -> Result<Generation, StoreError> {
        let path = self.path(key)?;
        let tmp = self.write_temp(key, &path, data, sensitivity)?;
        let result = match &precondition {
            Precondition::None => fs::rename(&tmp, &path).map_err(|e| self.io(key, "rename", e)),
            Precondition::DoesNotExist => {
                // link(2) fails with EEXIST when the target exists: an atomic create that also
                // never exposes a half-written file (O_EXCL + write would).
                let linked = match fs::hard_link(&tmp, &path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        Err(self.precondition_failed(key))
                    }
                    Err(e) => Err(self.io(key, "link", e)),
                };
                let _ = fs::remove_file(&tmp);
                linked
            }
            Precondition::GenerationMatches(expected) => {
                self.with_cas_lock(key, &path, || match self.read(key, &path)? {
                    Some(current) if current.generation == *expected => {
                        fs::rename(&tmp, &path).map_err(|e| self.io(key, "rename", e))
                    }
                    _ => Err(self.precondition_failed(key)),
                })
            }
        };
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        self.sync_dir(&path);
        Ok(digest(data))
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let remove = || match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io(key, "delete", e)),
        };
        match precondition {
            Precondition::None => remove().map(|_| ()),
            Precondition::DoesNotExist => match self.read(key, &path)? {
                None => Ok(()),
                Some(_) => Err(self.precondition_failed(key)),
            },
            Precondition::GenerationMatches(expected) => {
                self.with_cas_lock(key, &path, || match self.read(key, &path)? {
                    Some(current) if current.generation == expected => remove().map(|_| ()),
                    _ => Err(self.precondition_failed(key)),
                })
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let mut found = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(prefix, "list", e)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // Temporary files and compare-and-swap sidecars are ours, not objects.
                if name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                let Some(key) = path
                    .strip_prefix(&self.root)
                    .ok()
                    .and_then(|k| k.to_str())
                    .map(str::to_owned)
                else {
                    continue;
                };
                if meta.is_dir() {
                    // Only folders on the way to (or under) the prefix.
                    let folder = format!("{key}/");
                    if folder.starts_with(prefix) || prefix.starts_with(&folder) {
                        pending.push(path);
                    }
                } else if key.starts_with(prefix) && check_key(&key).is_ok() {
                    let updated = meta
                        .modified()
                        .map(time::OffsetDateTime::from)
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                    found.push(Listed { key, updated });
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, FsStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStore::new(dir.path().join("store")).expect("store");
        (dir, store)
    }

    #[tokio::test]
    async fn round_trip_and_preconditions() {
        let (_d, s) = store();
        assert!(s.get("a/b.json").await.expect("get").is_none());
        let g1 = s
            .put(
                "a/b.json",
                b"one",
                Precondition::DoesNotExist,
                Sensitivity::Public,
            )
            .await
            .expect("create");
        let err = s
            .put(
                "a/b.json",
                b"two",
                Precondition::DoesNotExist,
                Sensitivity::Public,
            )
            .await
            .expect_err("exists");
        assert!(err.is_precondition_failed());
        let got = s.get("a/b.json").await.expect("get").expect("exists");
        assert_eq!(got.data, b"one");
        assert_eq!(got.generation, g1);
        let g2 = s
            .put(
                "a/b.json",
                b"two",
                Precondition::GenerationMatches(g1.clone()),
                Sensitivity::Public,
            )
            .await
            .expect("cas");
        let err = s
            .put(
                "a/b.json",
                b"three",
                Precondition::GenerationMatches(g1.clone()),
                Sensitivity::Public,
            )
            .await
            .expect_err("stale generation");
        assert!(err.is_precondition_failed());
        let err = s
            .delete("a/b.json", Precondition::GenerationMatches(g1))
            .await
            .expect_err("stale delete");
        assert!(err.is_precondition_failed());
        s.delete("a/b.json", Precondition::GenerationMatches(g2))
            .await
            .expect("delete");
        assert!(s.get("a/b.json").await.expect("get").is_none());
        s.delete("a/b.json", Precondition::None)
            .await
            .expect("idempotent delete");
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(s.root().join("a"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn secrets_are_0600_from_the_start() {
        let (_d, s) = store();
        for (key, data, sensitivity, mode) in [
            ("k/privkey.pem", b"secret", Sensitivity::Secret, 0o600),
            ("k/pub.pem", b"public", Sensitivity::Public, 0o644),
        ] {
            s.put(key, data, Precondition::None, sensitivity)
                .await
                .expect("put");
            let meta = fs::metadata(s.root().join(key)).expect("meta");
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{key}");
        }
    }

    #[tokio::test]
    async fn the_root_is_private_and_lists_objects_only() {
        let (dir, store) = store();
        let mode = fs::metadata(dir.path().join("store"))
            .expect("root")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        for key in [
            "acme-challenge/t1",
            "acme-challenge/t2",
            "certs/app/1/fullchain.pem",
        ] {
            store
                .put(key, b"x", Precondition::None, Sensitivity::Public)
                .await
                .expect("put");
        }
        let mut keys: Vec<String> = store
            .list("acme-challenge/")
            .await
            .expect("list")
            .into_iter()
            .map(|l| l.key)
            .collect();
        keys.sort();
        assert_eq!(keys, ["acme-challenge/t1", "acme-challenge/t2"]);
        assert_eq!(store.list("certs/app/").await.expect("list").len(), 1);
        assert!(store.list("nothing/").await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn bad_keys_are_refused() {
        let (_d, s) = store();
        for key in ["../escape", "/abs", "a//b"] {
            assert!(s.get(key).await.is_err(), "{key}");
            assert!(s
                .put(key, b"x", Precondition::None, Sensitivity::Public)
                .await
                .is_err());
        }
    }

    /// How many of 8 threads, each writing `key` under `precondition` at the same time, win.
    /// The file store's futures never wait, so each thread runs its write to the end at once.
    fn winners(s: &FsStore, key: &str, precondition: &Precondition) -> usize {
        use futures_util::FutureExt;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let p = precondition.clone();
                    scope.spawn(move || {
                        s.put(key, format!("{i}").as_bytes(), p, Sensitivity::Public)
                            .now_or_never()
                            .expect("the file store does not wait")
                            .is_ok()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap_or(false)))
                .sum()
        })
    }

    #[test]
    fn concurrent_creates_have_one_winner() {
        let (_d, s) = store();
        assert_eq!(winners(&s, "locks/x", &Precondition::DoesNotExist), 1);
    }

    #[test]
    fn concurrent_swaps_have_one_winner() {
        use futures_util::FutureExt;
        let (_d, s) = store();
        let g = s
            .put("locks/y", b"start", Precondition::None, Sensitivity::Public)
            .now_or_never()
            .expect("the file store does not wait")
            .expect("seed");
        assert_eq!(
            winners(&s, "locks/y", &Precondition::GenerationMatches(g)),
            1
        );
    }
}
