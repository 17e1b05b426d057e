//! Hot reload: a new config, plugin or `config_files` file goes live with no restart and no
//! failed request.
//!
//! One `reload` thread does all the work, off the request path: it owns the file watcher and
//! takes triggers (file changes, SIGHUP, `POST /admin/reload`) from a channel. A reload reads
//! and checks the config, compiles what changed and initialises every new pipeline entry; only
//! when all of that succeeded is the routing table swapped, in one atomic store. Requests in
//! flight finish on the table they started with. A reload that fails changes nothing.
//!
//! File changes are debounced, then compared by content hash with what the last reload read,
//! so touching a file, or a change to an unrelated file in a watched directory, reloads
//! nothing. A file is hashed again only when its metadata changed, so a busy neighbour (a log
//! written next to the config) costs a few `stat`s per event rather than a hash of every
//! plugin. Directories are watched rather than files, so a file replaced by a rename (how
//! editors and deploy tools write) is still seen.

pub mod compile_cache;
mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use notify::Watcher;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::gateway::{Gateway, Table};
use crate::plugins::content_hash;

pub use self::status::Outcome;
use self::status::Status;

/// Longest a stream of file events may hold a reload back.
const MAX_DEBOUNCE_WAIT: Duration = Duration::from_secs(2);
/// A file's timestamps tick coarsely (a scheduler tick on most filesystems), so a file changed
/// this recently may change again without its metadata moving: its hash is not remembered.
const SETTLE: Duration = Duration::from_secs(2);

/// Why a reload runs.
enum Trigger {
    /// Something changed in a watched directory.
    Files,
    Signal,
    /// `POST /admin/reload`, waiting for the outcome.
    Admin(oneshot::Sender<Outcome>),
    Stop,
}

/// The way into the reload thread, for the admin API and the signal handler.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Trigger>,
    status: Arc<Mutex<Status>>,
}

impl Handle {
    /// Reloads now and answers with the outcome.
    pub async fn reload(&self) -> Outcome {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Trigger::Admin(tx)).is_err() {
            return Outcome::unavailable();
        }
        rx.await.unwrap_or_else(|_| Outcome::unavailable())
    }

    /// Asks for a reload, as SIGHUP does.
    pub fn signal(&self) {
        let _ = self.tx.send(Trigger::Signal);
    }

    /// Stops the reload thread (a reload under way finishes first).
    pub fn stop(&self) {
        let _ = self.tx.send(Trigger::Stop);
    }

    /// The live config and the last reload, for `GET /admin/status`.
    pub fn status_json(&self) -> serde_json::Value {
        self.status.lock().to_json()
    }
}

/// What was on disk when a reload read it: the config text and the hash of every file it
/// names (`None`: unreadable).
#[derive(PartialEq, Eq)]
struct Snapshot {
    files: BTreeMap<PathBuf, Option<String>>,
}

/// The reload thread's state.
struct Reloader {
    gw: Arc<Gateway>,
    path: PathBuf,
    /// The config the live table was built from.
    live: Config,
    /// What the last reload (successful or not) read, to skip reloads that would change
    /// nothing.
    last_seen: Snapshot,
    hashes: FileHashes,
    status: Arc<Mutex<Status>>,
    tx: mpsc::Sender<Trigger>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: BTreeSet<PathBuf>,
}

/// Starts the reload thread for a gateway serving `config`, read from `path`.
pub fn start(
    gw: Arc<Gateway>,
    path: &Path,
    config: Config,
) -> std::io::Result<(Handle, std::thread::JoinHandle<()>)> {
    let path = absolute(path);
    let (tx, rx) = mpsc::channel();
    let mut hashes = FileHashes::new(SETTLE);
    let (mut snapshot, text) = read_snapshot(&path, &mut hashes);
    // The file may have changed while the first table was built: if it no longer says what is
    // live, the first pass of the reload thread picks it up.
    let stale = text
        .ok()
        .and_then(|t| Config::parse(&t, &path).ok())
        .is_none_or(|mut c| {
            c.base_dir.clone_from(&config.base_dir);
            format!("{c:?}") != format!("{config:?}")
        });
    if stale {
        snapshot.files.clear();
        let _ = tx.send(Trigger::Files);
    }
    let status = Arc::new(Mutex::new(Status::new(
        &path,
        hash_of(&snapshot, &path),
        &gw.table.load(),
    )));
    let mut reloader = Reloader {
        gw,
        path,
        live: config,
        last_seen: snapshot,
        hashes,
        status: status.clone(),
        tx: tx.clone(),
        watcher: None,
        watched: BTreeSet::new(),
    };
    reloader.watch(None);
    let thread = std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || reloader.run(rx))?;
    Ok((Handle { tx, status }, thread))
}

impl Reloader {
    fn run(mut self, rx: mpsc::Receiver<Trigger>) {
        while let Ok(first) = rx.recv() {
            let mut waiting = Vec::new();
            let mut forced = false;
            let mut stop = false;
            let mut files = false;
            let mut take = |t: Trigger| match t {
                Trigger::Files => files = true,
                Trigger::Signal => forced = true,
                Trigger::Admin(tx) => {
                    forced = true;
                    waiting.push(tx);
                }
                Trigger::Stop => stop = true,
            };
            let debounce = Duration::from_millis(self.live.reload.debounce_ms);
            let deadline = Instant::now() + debounce + MAX_DEBOUNCE_WAIT;
            let only_files = matches!(first, Trigger::Files);
            take(first);
            if only_files {
                // Wait for the writes to settle, unless an operator asks for a reload meanwhile.
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(debounce.min(left)) {
                        Ok(Trigger::Files) if !left.is_zero() => continue,
                        Ok(t) => {
                            take(t);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            while let Ok(t) = rx.try_recv() {
                take(t);
            }
            if stop {
                return;
            }
            let trigger = if !waiting.is_empty() {
                "admin"
            } else if forced {
                "signal"
            } else if files && self.live.reload.watch {
                "file"
            } else {
                continue;
            };
            let outcome = self.reload(trigger, forced);
            for tx in waiting {
                let _ = tx.send(outcome.clone());
            }
        }
    }

    /// Reads everything again and, when `forced` or when anything changed, builds and swaps in
    /// a new table.
    fn reload(&mut self, trigger: &'static str, forced: bool) -> Outcome {
        let started = Instant::now();
        let at = SystemTime::now();
        let (snapshot, text) = read_snapshot(&self.path, &mut self.hashes);
        if !forced && snapshot == self.last_seen {
            tracing::debug!("watched files changed, but not their contents: nothing to reload");
            return Outcome::unchanged();
        }
        let config_hash = hash_of(&snapshot, &self.path);
        let plugin_hashes = |config: Option<&Config>| -> BTreeMap<String, String> {
            config
                .map(|c| {
                    c.plugins
                        .iter()
                        .map(|(name, p)| {
                            let hash = snapshot
                                .files
                                .get(&absolute(&c.plugin_path(p)))
                                .cloned()
                                .flatten()
                                .unwrap_or_else(|| "unreadable".into());
                            (name.clone(), hash)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };

        let result = text
            .and_then(|text| Config::parse(&text, &self.path).map_err(|e| e.to_string()))
            .map_err(|e| (vec![e], None))
            .and_then(|config| {
                // A config being tried may name new files: a fix to them must be seen too.
                self.watch(Some(&config));
                let fixed = fixed_settings(&self.path, &self.live, &config);
                if !fixed.is_empty() {
                    return Err((fixed, Some(Box::new(config))));
                }
                let old = self.gw.table.load_full();
                match Gateway::build_table_from(&self.gw.shared, &config, Some(&old)) {
                    Ok(table) => Ok((config, old, table)),
                    Err(problems) => Err((problems, Some(Box::new(config)))),
                }
            });
        match result {
            Ok((config, old, table)) => {
                self.last_seen = snapshot;
                let (reused, created) = stage_reuse(&old, &table);
                let table = Arc::new(table);
                let outcome = Outcome::ok(
                    at,
                    trigger,
                    started.elapsed(),
                    config_hash,
                    table
                        .plugins
                        .iter()
                        .map(|(n, h)| (n.to_string(), h.to_string()))
                        .collect(),
                    reused,
                    created,
                );
                {
                    // Under the status lock, so whoever sees the new table sees its status.
                    let mut status = self.status.lock();
                    self.gw.table.store(table.clone());
                    status.succeeded(&outcome, &table);
                }
                self.gw.start_upstreams();
                drop(old);
                // Forget compiled versions no live table uses any more.
                self.gw
                    .shared
                    .runtime
                    .retain_compiled(|hash| table.plugins.iter().any(|(_, h)| &**h == hash));
                self.gw.shared.metrics.reload(true);
                self.live = config;
                self.watch(None);
                tracing::info!(
                    trigger,
                    duration_ms = outcome.duration_ms,
                    routes = table.router.routes().count(),
                    stages_reused = reused,
                    stages_created = created,
                    config_hash = %outcome.config_hash.as_deref().unwrap_or_default(),
                    "config reloaded"
                );
                outcome
            }
            Err((errors, config)) => {
                let plugins = plugin_hashes(config.as_deref());
                self.last_seen = snapshot;
                let outcome =
                    Outcome::failed(at, trigger, started.elapsed(), config_hash, plugins, errors);
                for e in &outcome.errors {
                    tracing::error!(trigger, error = %e, "reload refused");
                }
                tracing::error!(
                    trigger,
                    duration_ms = outcome.duration_ms,
                    errors = outcome.errors.len(),
                    "reload failed: the previous config stays live"
                );
                self.status.lock().failed(&outcome);
                self.gw.shared.metrics.reload(false);
                outcome
            }
        }
    }

    /// Watches the directories of the config and of every file the live config, and `also`,
    /// name, when the live config has `[reload] watch` on.
    fn watch(&mut self, also: Option<&Config>) {
        if !self.live.reload.watch {
            self.watcher = None;
            self.watched.clear();
            return;
        }
        if self.watcher.is_none() {
            let tx = self.tx.clone();
            let handler = move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(Trigger::Files);
                }
            };
            match notify::recommended_watcher(handler) {
                Ok(w) => self.watcher = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch files: reload with SIGHUP or POST /admin/reload");
                    return;
                }
            }
        }
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let mut files = files_of(&self.path, Some(&self.live));
        files.extend(files_of(&self.path, also));
        let wanted: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_owned))
            .collect();
        for gone in self.watched.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        let mut watched = BTreeSet::new();
        for dir in &wanted {
            if self.watched.contains(dir) {
                watched.insert(dir.clone());
                continue;
            }
            match watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir.clone());
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory")
                }
            }
        }
        self.watched = watched;
    }
}

/// Settings a running gateway cannot take up: the sockets are bound, the workers started and
/// the engine built.
fn fixed_settings(path: &Path, live: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut changed = |key: &str, old: String, new: String| {
        if old != new {
            out.push(format!(
                "{}: {key} changed from {old} to {new}, which needs a restart (the previous config stays live)",
                path.display()
            ));
        }
    };
    for ((key, old), (_, new)) in live
        .server
        .fixed_settings()
        .into_iter()
        .zip(new.server.fixed_settings())
    {
        changed(key, old, new);
    }
    let admin = |c: &Config| {
        c.admin.as_ref().map_or("none".into(), |a| {
            format!(
                "{} (token file {})",
                a.listen,
                a.token_file
                    .as_ref()
                    .map_or("none".into(), |p| p.display().to_string())
            )
        })
    };
    changed("admin", admin(live), admin(new));
    if live.state != new.state {
        out.push(format!(
            "{}: [state] changed, which needs a restart (the previous config stays live)",
            path.display()
        ));
    }
    if format!("{:?}", live.wasm) != format!("{:?}", new.wasm) {
        out.push(format!(
            "{}: [wasm] changed, which needs a restart (the previous config stays live)",
            path.display()
        ));
    }
    out
}

/// How many of `new`'s stages were taken over from `old`, and how many were created.
fn stage_reuse(old: &Table, new: &Table) -> (usize, usize) {
    let stages = |t: &Table| -> Vec<*const crate::pipeline::Stage> {
        t.router
            .routes()
            .flat_map(|(_, r)| r.pipeline.iter().flat_map(|p| &p.stages))
            .map(Arc::as_ptr)
            .collect()
    };
    let before: HashSet<_> = stages(old).into_iter().collect();
    let after = stages(new);
    let reused = after.iter().filter(|s| before.contains(s)).count();
    (reused, after.len() - reused)
}

/// The config file and every file it names (plugins, `config_files`), as absolute paths.
fn files_of(path: &Path, config: Option<&Config>) -> Vec<PathBuf> {
    let mut files = vec![path.to_owned()];
    if let Some(c) = config {
        files.extend(c.tls_files().iter().map(|f| absolute(f)));
        files.extend(c.plugins.values().map(|p| absolute(&c.plugin_path(p))));
        for r in &c.routes {
            for e in &r.pipeline {
                files.extend(
                    e.config_files
                        .values()
                        .map(|f| absolute(&c.base_dir.join(f))),
                );
            }
        }
    }
    files
}

/// Reads the config and hashes it and every file it names. Also returns the config text, or
/// why it could not be read.
fn read_snapshot(path: &Path, hashes: &mut FileHashes) -> (Snapshot, Result<String, String>) {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    let config = text.as_ref().ok().and_then(|t| Config::parse(t, path).ok());
    let files: BTreeMap<PathBuf, Option<String>> = files_of(path, config.as_ref())
        .into_iter()
        .map(|f| {
            let hash = hashes.hash(&f);
            (f, hash)
        })
        .collect();
    hashes.known.retain(|f, _| files.contains_key(f));
    (Snapshot { files }, text)
}

/// What identifies one version of a file without reading it: a write changes its size or
/// change time, a replacement by rename its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file was last changed at least `settle` ago.
    fn settled(&self, settle: Duration) -> bool {
        let Ok(now) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let newest = self.mtime.max(self.ctime);
        let (Ok(secs), Ok(nanos)) = (u64::try_from(newest.0), u32::try_from(newest.1)) else {
            return false;
        };
        now.saturating_sub(Duration::new(secs, nanos.min(999_999_999))) >= settle
    }
}

/// Content hashes of the watched files, remembered with the metadata they were read under.
struct FileHashes {
    known: HashMap<PathBuf, (Stamp, String)>,
    settle: Duration,
    /// Files read and hashed so far (for tests).
    hashed: u64,
}

impl FileHashes {
    fn new(settle: Duration) -> Self {
        Self {
            known: HashMap::new(),
            settle,
            hashed: 0,
        }
    }

    /// The file's content hash (`None`: unreadable), read again only when its metadata
    /// changed since it was last read, or it had changed just before that.
    fn hash(&mut self, path: &Path) -> Option<String> {
        // Stat before reading: a write after the stat changes the stamp seen next time.
        let Ok(stamp) = std::fs::metadata(path).map(|m| Stamp::of(&m)) else {
            self.known.remove(path);
            return None;
        };
        if let Some((known, hash)) = self.known.get(path)
            && *known == stamp
        {
            return Some(hash.clone());
        }
        self.hashed += 1;
        let Ok(bytes) = std::fs::read(path) else {
            self.known.remove(path);
            return None;
        };
        let hash = content_hash(&bytes);
        if stamp.settled(self.settle) {
            self.known.insert(path.to_owned(), (stamp, hash.clone()));
        } else {
            self.known.remove(path);
        }
        Some(hash)
    }
}

fn hash_of(snapshot: &Snapshot, path: &Path) -> Option<String> {
    snapshot.files.get(path).cloned().flatten()
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_again_only_when_its_metadata_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("plugin.wasm");
        std::fs::write(&f, "one").unwrap();
        let mut hashes = FileHashes::new(Duration::ZERO);
        let first = hashes.hash(&f).unwrap();
        assert_eq!(first, content_hash(b"one"));
        // Unchanged: served from what was remembered.
        assert_eq!(hashes.hash(&f).unwrap(), first);
        assert_eq!(hashes.hashed, 1);

        // Rewritten in place with the same length: the change time moves.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&f, "two").unwrap();
        assert_eq!(hashes.hash(&f).unwrap(), content_hash(b"two"));
        assert_eq!(hashes.hashed, 2);

        // Replaced by a rename: a new inode.
        let tmp = dir.path().join("plugin.wasm.new");
        std::fs::write(&tmp, "six").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_eq!(hashes.hash(&f).unwrap(), content_hash(b"six"));
        assert_eq!(hashes.hashed, 3);

        // Gone, then back.
        std::fs::remove_file(&f).unwrap();
        assert_eq!(hashes.hash(&f), None);
        std::fs::write(&f, "six").unwrap();
        assert_eq!(hashes.hash(&f).unwrap(), content_hash(b"six"));
        assert_eq!(hashes.hashed, 4);
    }

    #[test]
    fn a_file_changed_moments_ago_is_always_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gateway.toml");
        std::fs::write(&f, "a").unwrap();
        let mut hashes = FileHashes::new(Duration::from_secs(3600));
        for _ in 0..3 {
            assert_eq!(hashes.hash(&f).unwrap(), content_hash(b"a"));
        }
        assert_eq!(hashes.hashed, 3);
    }

    #[test]
    fn a_busy_neighbour_does_not_make_the_snapshot_rehash_plugins() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("p.wasm");
        std::fs::write(&plugin, b"\0asm").unwrap();
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[plugins.p]\npath = {:?}\n[upstreams.u]\ntargets = [\"http://127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"u\"\n[[routes.pipeline]]\nplugin = \"p\"\n",
                plugin.display().to_string()
            ),
        )
        .unwrap();
        let mut hashes = FileHashes::new(Duration::ZERO);
        let (first, _) = read_snapshot(&config, &mut hashes);
        assert!(
            first.files.contains_key(&plugin),
            "{:?}",
            first.files.keys()
        );
        assert_eq!(hashes.hashed, 2);
        for i in 0..5 {
            std::fs::write(dir.path().join("gateway.log"), format!("line {i}\n")).unwrap();
            let (again, _) = read_snapshot(&config, &mut hashes);
            assert!(again == first);
        }
        assert_eq!(hashes.hashed, 2);
    }
}
