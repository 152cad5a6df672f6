//! An in-memory cache of small files, so that a hot file costs no filesystem syscalls.
//!
//! Serving `/index.html` from disk costs a `canonicalize` (a readlink per path component), an
//! open, an fstat, a read and a close: more syscalls than the request's own read and write.
//! Files up to [`MAX_CACHED_FILE`] are kept here after their first request, with their
//! validators and content type, bounded in total by `--cache-bytes`.
//!
//! Entries are keyed by the request target's path exactly as sent, and created only after
//! [`crate::static_files::StaticFiles::open`] has done all its safety checks for that path.
//!
//! # Never stale: inotify, another readiness source
//!
//! The cache watches the directory of every file it holds with inotify. The inotify file
//! descriptor is registered in the server's `Poll` like a socket: when a watched file is
//! written, renamed, deleted, or gets a sidecar, the descriptor becomes readable, and the
//! loop calls [`FileCache::on_watch_event`] before it serves anything else in that turn, so
//! a request that arrives after a change never sees the old bytes.
//!
//! As a backstop (a watch limit reached, a parent directory renamed, a system without
//! inotify), every entry is also revalidated at most once per second by a `stat` of its real
//! path: inode, size and modification time to the nanosecond must still match. Files that
//! have `.br`/`.gz` sidecars are not cached at all.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::inotify;

use crate::conditional::Validators;

/// Files larger than this are never cached (they are streamed from disk).
pub const MAX_CACHED_FILE: u64 = 1024 * 1024;

/// How often an entry is checked against the filesystem.
const REVALIDATE_EVERY: Duration = Duration::from_secs(1);

/// What identifies one version of a file: any write changes at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Identity {
    fn of(meta: &Metadata) -> Self {
        Identity {
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// One cached file.
#[derive(Debug)]
pub struct CachedFile {
    /// The whole file, shared: a response refers to it rather than copying it.
    pub body: std::rc::Rc<[u8]>,
    /// Its `Content-Type`.
    pub content_type: String,
    /// Its ETag and modification time.
    pub validators: Validators,
    /// Its `Last-Modified` value, formatted once.
    pub last_modified: String,
    /// Its canonical path, for revalidation.
    real_path: PathBuf,
    identity: Identity,
    checked_at: Instant,
}

impl CachedFile {
    /// A cache entry for a file whose canonical path, metadata and content are given.
    pub fn new(
        real_path: PathBuf,
        meta: &Metadata,
        body: impl Into<std::rc::Rc<[u8]>>,
        content_type: String,
        now: Instant,
    ) -> Self {
        let validators = Validators::of(meta);
        CachedFile {
            body: body.into(),
            content_type,
            last_modified: validators.last_modified(),
            validators,
            real_path,
            identity: Identity::of(meta),
            checked_at: now,
        }
    }

    fn cost(&self, key: &str) -> usize {
        self.body.len() + key.len() + self.content_type.len() + 256
    }
}

/// The inotify instance and the directories it watches.
#[derive(Debug)]
struct Watcher {
    fd: OwnedFd,
    /// Watch descriptor to directory.
    dirs: HashMap<i32, PathBuf>,
}

/// The cache: a map bounded in bytes, evicting the oldest entries first.
#[derive(Debug)]
pub struct FileCache {
    map: HashMap<String, CachedFile>,
    /// Keys in insertion order, for eviction. May hold keys already removed.
    order: VecDeque<String>,
    bytes: usize,
    budget: usize,
    watcher: Option<Watcher>,
}

impl FileCache {
    /// A cache holding at most `budget` bytes (0 disables it), watching with inotify when
    /// it can.
    pub fn new(budget: usize) -> Self {
        let flags = inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC;
        let watcher = match (budget > 0).then(|| inotify::init(flags)) {
            Some(Ok(fd)) => Some(Watcher {
                fd,
                dirs: HashMap::new(),
            }),
            Some(Err(e)) => {
                log::warn!("inotify unavailable ({e}): cached files are revalidated each second");
                None
            }
            None => None,
        };
        FileCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget,
            watcher,
        }
    }

    /// The inotify descriptor, to register with the `Poll`.
    pub fn watch_fd(&self) -> Option<RawFd> {
        self.watcher.as_ref().map(|w| w.fd.as_raw_fd())
    }

    /// Reads the pending inotify events and drops every entry they concern. Called when the
    /// descriptor is readable; reads until WouldBlock, like any edge-triggered source.
    pub fn on_watch_event(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&watcher.fd, &mut buf);
        let mut stale: Vec<PathBuf> = Vec::new();
        let mut stale_dirs: Vec<PathBuf> = Vec::new();
        let mut everything = false;
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    log::warn!("inotify read failed: {e}; dropping the whole cache");
                    everything = true;
                    break;
                }
            };
            let flags = event.events();
            if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                everything = true;
                continue;
            }
            let Some(dir) = watcher.dirs.get(&event.wd()) else {
                continue;
            };
            if flags.intersects(
                inotify::ReadFlags::IGNORED
                    | inotify::ReadFlags::DELETE_SELF
                    | inotify::ReadFlags::MOVE_SELF,
            ) {
                stale_dirs.push(dir.clone());
                continue;
            }
            if let Some(name) = event.file_name() {
                let name = name.to_bytes();
                stale.push(dir.join(OsStr::from_bytes(name)));
                // A new or changed sidecar changes what its file's requests get.
                for suffix in [&b".br"[..], b".gz"] {
                    if let Some(stem) = name.strip_suffix(suffix) {
                        stale.push(dir.join(OsStr::from_bytes(stem)));
                    }
                }
            }
        }
        for dir in &stale_dirs {
            watcher.dirs.retain(|_, d| d != dir);
        }
        if everything {
            self.map.clear();
            self.order.clear();
            self.bytes = 0;
            return;
        }
        if stale.is_empty() && stale_dirs.is_empty() {
            return;
        }
        let before = self.map.len();
        self.remove_where(|e| {
            stale.contains(&e.real_path) || stale_dirs.iter().any(|d| e.real_path.starts_with(d))
        });
        let dropped = before - self.map.len();
        if dropped > 0 {
            log::debug!("cache: dropped {dropped} entries changed on disk");
        }
    }

    /// Watches the directory holding `path`, if it is not watched yet.
    fn watch_dir_of(&mut self, path: &Path) {
        let (Some(watcher), Some(dir)) = (self.watcher.as_mut(), path.parent()) else {
            return;
        };
        if watcher.dirs.values().any(|d| d == dir) {
            return;
        }
        let mask = inotify::WatchFlags::MODIFY
            | inotify::WatchFlags::ATTRIB
            | inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::CREATE
            | inotify::WatchFlags::DELETE
            | inotify::WatchFlags::MOVED_FROM
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::DELETE_SELF
            | inotify::WatchFlags::MOVE_SELF
            | inotify::WatchFlags::ONLYDIR;
        match inotify::add_watch(&watcher.fd, dir, mask) {
            Ok(wd) => {
                watcher.dirs.insert(wd, dir.to_path_buf());
            }
            Err(e) => log::debug!("cannot watch {}: {e}; revalidating instead", dir.display()),
        }
    }

    fn remove_where(&mut self, mut pred: impl FnMut(&CachedFile) -> bool) {
        let mut freed = 0;
        self.map.retain(|key, entry| {
            let drop = pred(entry);
            if drop {
                freed += entry.cost(key);
            }
            !drop
        });
        self.bytes -= freed;
    }

    /// Whether a file of `len` bytes may be cached.
    pub fn accepts(&self, len: u64) -> bool {
        len <= MAX_CACHED_FILE && (len as usize) < self.budget
    }

    /// The entry for `key`, revalidated if it was last checked over a second ago.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<&CachedFile> {
        let entry = self.map.get_mut(key)?;
        if now.saturating_duration_since(entry.checked_at) >= REVALIDATE_EVERY {
            let current = std::fs::metadata(&entry.real_path).map(|m| Identity::of(&m));
            if current.ok() != Some(entry.identity) {
                log::debug!("cache: {key} changed on disk; dropped");
                self.remove(key);
                return None;
            }
            entry.checked_at = now;
        }
        self.map.get(key)
    }

    /// Adds an entry, evicting the oldest ones until it fits.
    pub fn insert(&mut self, key: String, file: CachedFile) {
        let cost = file.cost(&key);
        if cost > self.budget {
            return;
        }
        self.remove(&key);
        while self.bytes + cost > self.budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(&oldest);
        }
        self.watch_dir_of(&file.real_path.clone());
        self.bytes += cost;
        self.order.push_back(key.clone());
        self.map.insert(key, file);
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= old.cost(key);
        }
        // `order` keeps the key; popping a key that is gone is harmless. Keep it from
        // growing without bound when the same keys are replaced over and over.
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &std::path::Path, name: &str, content: &[u8], now: Instant) -> CachedFile {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        let meta = std::fs::metadata(&path).expect("meta");
        CachedFile::new(path, &meta, content.to_vec(), "text/plain".into(), now)
    }

    #[test]
    fn bounded_and_evicts_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Instant::now();
        let mut cache = FileCache::new(3 * (1000 + 2 + 10 + 256));
        for name in ["/a", "/b", "/c", "/d"] {
            cache.insert(
                name.to_string(),
                entry(dir.path(), &name[1..], &[b'x'; 1000], now),
            );
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get("/a", now).is_none(), "the oldest was not evicted");
        assert!(cache.get("/d", now).is_some());
        assert!(cache.bytes() <= 3 * (1000 + 2 + 10 + 256));
    }

    #[test]
    fn inotify_drops_a_changed_file_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Instant::now();
        let mut cache = FileCache::new(1 << 20);
        assert!(cache.watch_fd().is_some(), "inotify is available on Linux");
        // Both files exist before the directory is watched.
        let (f, g) = (
            entry(dir.path(), "f", b"one", now),
            entry(dir.path(), "g", b"other", now),
        );
        cache.insert("/f".into(), f);
        cache.insert("/g".into(), g);
        std::fs::write(dir.path().join("f"), b"two!").expect("rewrite");
        cache.on_watch_event();
        assert!(
            cache.get("/f", now).is_none(),
            "stale entry survived the event"
        );
        assert!(
            cache.get("/g", now).is_some(),
            "an unchanged file was dropped"
        );
        // A new sidecar drops its file too.
        std::fs::write(dir.path().join("g.gz"), b"zz").expect("sidecar");
        cache.on_watch_event();
        assert!(cache.get("/g", now).is_none());
    }

    #[test]
    fn change_on_disk_is_seen_after_a_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Instant::now();
        let mut cache = FileCache::new(1 << 20);
        cache.insert("/f".into(), entry(dir.path(), "f", b"one", now));
        std::fs::write(dir.path().join("f"), b"two!").expect("rewrite");
        // Within the second: still served from memory.
        assert!(cache.get("/f", now).is_some());
        // After it: revalidated, found changed, dropped.
        assert!(cache.get("/f", now + Duration::from_secs(1)).is_none());
        assert!(cache.is_empty());
    }
}
