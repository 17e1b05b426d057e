//! Compiled plugins kept on disk, so a restart skips compiling what was compiled before.
//!
//! An entry is keyed by the component's content hash and the engine's compatibility hash
//! (wasmtime's version and every setting that changes the machine code). It is two files:
//! `KEY.cwasm`, the serialized component as wasmtime wrote it, and `KEY.sha256`, its digest,
//! written after it. An entry is used only when that digest matches and wasmtime accepts it;
//! anything else (missing, truncated, corrupted, from another wasmtime or other settings) is
//! compiled again and replaced. A used entry is mapped from its file, not read into the heap:
//! only the pages that run take memory, and the kernel can share and reclaim them.
//!
//! The directory is `$WASMGATE_CACHE_DIR` (empty or `off` turns the cache off), else
//! `$XDG_CACHE_HOME/wasmgate`, else `$HOME/.cache/wasmgate`. Its entries are native code the
//! gateway runs, so it is created private, and the cache is off (with a warning) when anyone
//! but the gateway's user may write to it. It holds at most `$WASMGATE_CACHE_MAX_MIB` (2048 by
//! default): past it, the entries used least recently are removed.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The cache's size cap when `$WASMGATE_CACHE_MAX_MIB` does not set one.
const DEFAULT_MAX_MIB: u64 = 2048;

/// The cache directory, the key of the engine its entries must match, and its size cap.
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    max_bytes: u64,
}

/// Feeds `Hash` output into SHA-256, to turn wasmtime's compatibility hash into a stable key.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 digest is read")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl CompileCache {
    /// The cache for `engine`, or `None` when it is off or its directory is unusable.
    pub fn open(engine: &Engine) -> Option<Self> {
        let non_empty = |v: std::ffi::OsString| (!v.is_empty()).then_some(v);
        let dir = match std::env::var_os("WASMGATE_CACHE_DIR") {
            Some(d) if d.is_empty() || d == "off" => return None,
            Some(d) => PathBuf::from(d),
            None => match std::env::var_os("XDG_CACHE_HOME").and_then(non_empty) {
                Some(d) => PathBuf::from(d).join("wasmgate"),
                None => PathBuf::from(std::env::var_os("HOME").and_then(non_empty)?)
                    .join(".cache")
                    .join("wasmgate"),
            },
        };
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir().ok()?.join(dir)
        };
        if let Err(e) = private_dir(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "compile cache off");
            return None;
        }
        let max_mib = match std::env::var("WASMGATE_CACHE_MAX_MIB") {
            Ok(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => {
                    tracing::warn!(value = %v, "WASMGATE_CACHE_MAX_MIB is not a positive number: compile cache off");
                    return None;
                }
            },
            Err(_) => DEFAULT_MAX_MIB,
        };
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        tracing::info!(dir = %dir.display(), max_mib, "compile cache");
        Some(Self {
            dir,
            engine_key: hex(&h.0.finalize()),
            max_bytes: max_mib.saturating_mul(1 << 20),
        })
    }

    /// The component for `bytes` (whose content hash is `hash`), from the cache when a sound
    /// entry is there, else compiled and stored. Also says whether it came from the cache.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        hash: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.entry(hash);
        match self.read(engine, &path) {
            Ok(Some(c)) => return Ok((c, true)),
            Ok(None) => {}
            Err(why) => tracing::warn!(
                entry = %path.display(),
                why,
                "compile cache entry ignored: compiling again"
            ),
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|payload| self.write(&path, &payload).map_err(|e| e.to_string()))
        {
            tracing::warn!(entry = %path.display(), error = %e, "cannot write compile cache entry");
        }
        for removed in prune(&self.dir, self.max_bytes, &path) {
            tracing::info!(entry = %removed.display(), "compile cache entry removed: the cache is full");
        }
        Ok((component, false))
    }

    fn entry(&self, hash: &str) -> PathBuf {
        let key = Sha256::digest(format!("{hash}\0{}", self.engine_key));
        self.dir.join(format!("{}.cwasm", hex(&key)))
    }

    /// `Ok(None)` when there is no entry; `Err` when there is one that cannot be used.
    fn read(&self, engine: &Engine, path: &Path) -> Result<Option<Component>, String> {
        let digest = match std::fs::read_to_string(path.with_extension("sha256")) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        match file_digest(path) {
            Ok(actual) if actual == digest.trim() => {}
            Ok(_) => return Err("contents do not match their digest".into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
        let component =
            deserialize_file(engine, path).map_err(|e| format!("refused by wasmtime: {e}"))?;
        // Used now: the last to go when the cache is pruned.
        let _ = std::fs::File::options()
            .append(true)
            .open(path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Ok(Some(component))
    }

    /// Writes an entry whole or not at all: readers never see a partial file, and a component
    /// whose digest is not there yet is not used.
    fn write(&self, path: &Path, payload: &[u8]) -> std::io::Result<()> {
        let digest = hex(&Sha256::digest(payload));
        write_whole(path, payload)?;
        write_whole(&path.with_extension("sha256"), digest.as_bytes())
    }
}

/// Writes a file through a temporary one and a rename.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "tmp-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The hex SHA-256 of a file, read in pieces (an entry can be a hundred megabytes).
fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Removes the entries used least recently (by modification time, which a read refreshes)
/// until the `.cwasm` files take at most `max_bytes`; never `keep`. Returns what it removed.
fn prune(dir: &Path, max_bytes: u64, keep: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<(SystemTime, u64, PathBuf)> = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            if path.extension()? != "cwasm" {
                return None;
            }
            let meta = std::fs::metadata(&path).ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    let mut removed = Vec::new();
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        let _ = std::fs::remove_file(path.with_extension("sha256"));
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            removed.push(path);
        }
    }
    removed
}

#[allow(unsafe_code)]
fn deserialize_file(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize_file` trusts the native code it maps, and that the file
    // does not change while mapped. These bytes are what `Component::serialize` wrote,
    // unaltered: they match the SHA-256 stored beside them, in a directory only the gateway's
    // user can write to (checked at open, so altering them takes the same rights as replacing
    // the gateway itself), and the gateway replaces an entry by renaming a new file over it,
    // never by writing into it. wasmtime checks they were made by its own version with
    // compatible settings, and refuses them otherwise.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Creates `dir` readable by this user only, and checks nobody else can write to it.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = std::fs::metadata(dir)?;
        let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        if me.is_some_and(|uid| uid != meta.uid()) || meta.mode() & 0o022 != 0 {
            return Err(std::io::Error::other(
                "owned by another user or writable by others",
            ));
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::prune;

    #[test]
    fn pruning_removes_the_least_recently_used_entries_first_but_never_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let entry = |name: &str, len: usize, age_s: u64| {
            let path = dir.path().join(format!("{name}.cwasm"));
            std::fs::write(&path, vec![0u8; len]).unwrap();
            std::fs::write(path.with_extension("sha256"), "x").unwrap();
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(now - Duration::from_secs(age_s))
                .unwrap();
            path
        };
        let oldest = entry("a", 400, 300);
        let old = entry("b", 400, 200);
        let recent = entry("c", 400, 100);
        let new = entry("d", 400, 400); // just written, however old its time says it is
        assert!(prune(dir.path(), 1600, &new).is_empty());
        assert_eq!(prune(dir.path(), 900, &new), [oldest.clone(), old.clone()]);
        for gone in [&oldest, &old] {
            assert!(!gone.exists() && !gone.with_extension("sha256").exists());
        }
        assert!(recent.exists() && new.exists());
        assert_eq!(prune(dir.path(), 0, &new), [recent]);
        assert!(new.exists());
    }
}
