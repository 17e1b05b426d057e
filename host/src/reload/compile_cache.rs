//! Compiled plugins kept on disk, so a restart skips compiling what was compiled before.
//!
//! An entry is keyed by the component's content hash and the engine's compatibility hash
//! (wasmtime's version and every setting that changes the machine code), and holds the
//! serialized component with its SHA-256. An entry is used only when that digest matches and
//! wasmtime accepts it; anything else (missing, truncated, corrupted, from another wasmtime or
//! other settings) is compiled again and replaced.
//!
//! The directory is `$WASMGATE_CACHE_DIR` (empty or `off` turns the cache off), else
//! `$XDG_CACHE_HOME/wasmgate`, else `$HOME/.cache/wasmgate`. Its entries are native code the
//! gateway runs, so it is created private, and the cache is off (with a warning) when anyone
//! but the gateway's user may write to it.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Marks an entry of this format.
const MAGIC: &[u8; 8] = b"WGCC\x01\0\0\0";
const DIGEST_LEN: usize = 32;

/// The cache directory and the key of the engine its entries must match.
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
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
        let mut h = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        tracing::info!(dir = %dir.display(), "compile cache");
        Some(Self {
            dir,
            engine_key: hex(&h.0.finalize()),
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
        Ok((component, false))
    }

    fn entry(&self, hash: &str) -> PathBuf {
        let key = Sha256::digest(format!("{hash}\0{}", self.engine_key));
        self.dir.join(format!("{}.cwasm", hex(&key)))
    }

    /// `Ok(None)` when there is no entry; `Err` when there is one that cannot be used.
    fn read(&self, engine: &Engine, path: &Path) -> Result<Option<Component>, String> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let rest = data
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a compile cache entry")?;
        if rest.len() < DIGEST_LEN {
            return Err("truncated".into());
        }
        let (digest, payload) = rest.split_at(DIGEST_LEN);
        if Sha256::digest(payload).as_slice() != digest {
            return Err("contents do not match their digest".into());
        }
        deserialize(engine, payload)
            .map(Some)
            .map_err(|e| format!("refused by wasmtime: {e}"))
    }

    /// Writes an entry whole or not at all: readers never see a partial one.
    fn write(&self, path: &Path, payload: &[u8]) -> std::io::Result<()> {
        let tmp = path.with_extension(format!(
            "tmp-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&Sha256::digest(payload))?;
            f.write_all(payload)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, payload: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts the native code it is given. These bytes are what
    // `Component::serialize` wrote, unaltered: they match the SHA-256 stored with them, in a
    // directory only the gateway's user can write to (checked at open, so altering them takes
    // the same rights as replacing the gateway itself). wasmtime checks they were made by its
    // own version with compatible settings, and refuses them otherwise.
    unsafe { Component::deserialize(engine, payload) }
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
