//! An in-memory cache of small files and rendered listings, so that a hot file costs no
//! filesystem syscalls.
//!
//! Serving `/index.html` from disk costs an `openat2`, an `fstat`, two more `openat2` to look
//! for sidecars, a read and a close: more syscalls than the request's own read and write.
//! Files up to [`MAX_CACHED_FILE`] are kept here after their first request, with their
//! validators and content type, bounded in total by `--cache-bytes`, the oldest evicted
//! first. Directory listings are kept too (see [`FileCache::listing`]).
//!
//! Entries are keyed by the request target's path exactly as sent, and created only from
//! what [`crate::files::static_files::StaticFiles::open`] opened for that path.
//!
//! # Never stale: inotify, another readiness source
//!
//! The cache watches the directory that really holds each cached file (found from the open
//! descriptor, `/proc/self/fd/N`) with inotify. The inotify file descriptor is registered
//! in the server's `Poll` like a socket: when a watched file is written, renamed, deleted,
//! or gets a sidecar, the descriptor becomes readable, and the loop calls
//! [`FileCache::on_watch_event`] before it serves anything else in that turn, so a request
//! that arrives after a change never sees the old bytes. One watch serves every entry in
//! its directory and is removed (`inotify_rm_watch`) when the last of them goes; both
//! directions are hash maps, so nothing scans all watches.
//!
//! # Never stale for more than a second: the URL is resolved again
//!
//! inotify sees changes to a directory's entries, not to the path that led there. Sites
//! deploy by re-pointing a symlink (`current -> releases/v2`), and then nothing changed in
//! the old release's directory: the URL simply leads somewhere else. So, at most twice a
//! second per entry, the entry's URL is resolved again exactly as serving it would be
//! ([`crate::files::static_files::StaticFiles::current`]: the same `openat2` from the root, the
//! same sidecar lookups) and the file it leads to must be the same version (device, inode,
//! size and modification time to the nanosecond). A re-pointed symlink, a root that now
//! leads elsewhere, a file that is gone, a watch that could not be added, a sidecar that
//! appears beside a symlink to the file (the watch is on the target's directory, not the
//! link's): all are caught by this one check, because it asks the question serving asks. In between, a hit costs no
//! syscall at all. (Half a second, not one: with the root's own re-check, see
//! [`crate::files::static_files`], a re-pointed root is then served within a second too.)
//!
//! # Without inotify
//!
//! inotify is Linux's. Elsewhere, and on Linux with the `portable-fallbacks` feature, there
//! is no watcher: this second check alone keeps entries fresh (a change shows within a
//! second), and listings are not kept. Everything that differs is in the small `watching`
//! module at the end of this file.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::files::static_files::Directory;
use crate::files::static_files::StaticFiles;
use crate::http::conditional::Validators;

/// Files larger than this are never cached (they are streamed from disk).
pub const MAX_CACHED_FILE: u64 = 1024 * 1024;

/// How often an entry's URL is resolved again.
const REVALIDATE_EVERY: Duration = Duration::from_millis(500);

/// What identifies one version of a file: any write changes at least one of these, and a
/// different file (another release) has another device or inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    /// The inode's change time: any write moves it, and unlike mtime no one can set it
    /// back (a file rewritten through a hard link elsewhere, then `touch -d` to its old
    /// mtime, keeps inode, size and mtime).
    ctime: i64,
    ctime_nsec: i64,
}

impl Identity {
    fn of(meta: &Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// One cached file.
#[derive(Debug)]
pub struct CachedFile {
    /// The whole file, shared with the responses that are sending it.
    pub body: Rc<[u8]>,
    /// Its `Content-Type`.
    pub content_type: String,
    /// Its ETag and modification time.
    pub validators: Validators,
    /// Its `Last-Modified` value, formatted once; `None` if its time has no HTTP date.
    pub last_modified: Option<String>,
    /// The header lines of its 200 response between `Date` and `Content-Length`, written
    /// once by whoever caches it (`answer.rs`), so that each response copies them in one
    /// piece. Empty: not written, and each response writes its own.
    pub head_fields: Box<[u8]>,
    identity: Identity,
    checked_at: Instant,
}

impl CachedFile {
    /// A cache entry for a file whose metadata (from `fstat` on the open file) and content
    /// are given.
    pub fn new(meta: &Metadata, body: Vec<u8>, content_type: String, now: Instant) -> Self {
        let validators = Validators::of(meta);
        CachedFile {
            body: body.into(),
            content_type,
            last_modified: validators.last_modified(),
            head_fields: Box::default(),
            validators,
            identity: Identity::of(meta),
            checked_at: now,
        }
    }
}

/// What the cache holds for one key.
#[derive(Debug)]
enum Entry {
    File(CachedFile),
    /// A rendered listing of the directory in this version (see [`Directory::version`]).
    Listing {
        html: Rc<[u8]>,
        version: (u64, u64, i64, i64),
    },
}

/// An entry and the watch that keeps it fresh.
#[derive(Debug)]
struct Slot {
    entry: Entry,
    watch: Option<Watched>,
}

impl Slot {
    fn cost(&self, key: &str) -> usize {
        let body = match &self.entry {
            Entry::File(f) => f.body.len() + f.content_type.len(),
            Entry::Listing { html, .. } => html.len(),
        };
        body + key.len() + 256
    }
}

/// Which watch an entry hangs on, and what in that directory concerns it.
#[derive(Debug)]
struct Watched {
    wd: i32,
    /// The file's name in the watched directory; `None` for a listing, which any event in
    /// its directory makes stale.
    name: Option<OsString>,
}

/// One inotify watch: a directory and the keys of the entries that depend on it. The watch
/// lives exactly as long as `keys` is not empty.
#[derive(Debug)]
struct Watch {
    dir: PathBuf,
    keys: HashSet<String>,
}

/// The inotify instance and its watches, indexed both ways.
#[derive(Debug)]
struct Watcher {
    fd: OwnedFd,
    by_dir: HashMap<PathBuf, i32>,
    by_wd: HashMap<i32, Watch>,
}

/// The cache: a map bounded in bytes, evicting the oldest entries first.
#[derive(Debug)]
pub struct FileCache {
    /// Hashed with foldhash, not the standard SipHash: every request looks a key up (twice
    /// when it hits), and SipHash was a tenth of the user-space time per request
    /// (`benches/parse_respond.rs`). Flooding is what SipHash guards against, and it needs
    /// many keys that collide *in the map*: keys here are paths of files and directories
    /// that exist under the root, inserted only after they were opened, so a client can
    /// only look up, never add, and the seed is random per process besides.
    map: HashMap<String, Slot, foldhash::fast::RandomState>,
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
        let watcher = match (budget > 0).then(watching::init) {
            Some(Ok(fd)) => Some(Watcher {
                fd,
                by_dir: HashMap::new(),
                by_wd: HashMap::new(),
            }),
            Some(Err(e)) if e.kind() == io::ErrorKind::Unsupported => {
                log::info!("no inotify in this build: cached files are revalidated twice a second");
                None
            }
            Some(Err(e)) => {
                log::warn!(
                    "inotify unavailable ({e}): cached files are revalidated twice a second"
                );
                None
            }
            None => None,
        };
        FileCache {
            map: HashMap::default(),
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

    /// How many directories are watched now.
    pub fn watch_count(&self) -> usize {
        self.watcher.as_ref().map_or(0, |w| w.by_wd.len())
    }

    /// Reads the pending inotify events and drops every entry they concern. Called when the
    /// descriptor is readable; reads until WouldBlock, like any edge-triggered source.
    pub fn on_watch_event(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        // What the events concern: (watch, name in it), or the whole directory (`None`).
        let mut changed: Vec<(i32, Option<Vec<u8>>)> = Vec::new();
        // Keys whose watch the kernel removed (their directory is gone).
        let mut stale: Vec<String> = Vec::new();
        let mut everything = false;
        let map = &mut self.map;
        let read = watching::read_changes(watcher.fd.as_fd(), |change| match change {
            Change::Overflow => everything = true,
            Change::WatchGone(wd) => {
                // The kernel removed the watch (the directory is gone, or we removed it):
                // forget it first, so that dropping its entries does not remove it again.
                if let Some(watch) = watcher.by_wd.remove(&wd) {
                    watcher.by_dir.remove(&watch.dir);
                    for key in &watch.keys {
                        if let Some(slot) = map.get_mut(key) {
                            slot.watch = None;
                        }
                    }
                    stale.extend(watch.keys);
                }
            }
            Change::Dir(wd) => changed.push((wd, None)),
            Change::Name(wd, name) => changed.push((wd, Some(name))),
        });
        if let Err(e) = read {
            log::warn!("inotify read failed: {e}; dropping the whole cache");
            everything = true;
        }
        if everything {
            stale = self.map.keys().cloned().collect();
        }
        for (wd, name) in changed {
            self.stale_keys(wd, name.as_deref(), &mut stale);
        }
        let before = self.map.len();
        for key in &stale {
            self.remove(key);
        }
        let dropped = before - self.map.len();
        if dropped > 0 {
            log::debug!("cache: dropped {dropped} entries changed on disk");
        }
    }

    /// Adds to `stale` the keys that an event on `name` in watch `wd` (on the directory
    /// itself, if `None`) makes stale.
    fn stale_keys(&self, wd: i32, name: Option<&[u8]>, stale: &mut Vec<String>) {
        let Some(watch) = self.watcher.as_ref().and_then(|w| w.by_wd.get(&wd)) else {
            return;
        };
        for key in &watch.keys {
            let Some(Slot {
                watch: Some(watched),
                ..
            }) = self.map.get(key)
            else {
                continue;
            };
            let hit = match (name, &watched.name) {
                // The directory itself changed, or a listing's directory changed at all.
                (None, _) | (_, None) => true,
                (Some(name), Some(file)) => {
                    let file = file.as_bytes();
                    // A new or changed sidecar changes what its file's requests get.
                    name == file
                        || [&b".br"[..], b".gz"]
                            .iter()
                            .any(|suffix| name.strip_suffix(*suffix) == Some(file))
                }
            };
            if hit {
                stale.push(key.clone());
            }
        }
    }

    /// Starts (or joins) the watch for `key`, whose entry comes from the open `fd`: the
    /// directory that holds it, or the directory itself (`whole_dir`, for a listing).
    /// `None` if it cannot be watched; the revalidation still keeps it correct.
    fn acquire(&mut self, key: &str, fd: BorrowedFd<'_>, whole_dir: bool) -> Option<Watched> {
        let watcher = self.watcher.as_mut()?;
        // Where the descriptor really is, every symlink resolved, as the kernel sees it.
        let real = watching::real_path(fd)?;
        let (dir, name) = if whole_dir {
            (real.as_path(), None)
        } else {
            (real.parent()?, Some(real.file_name()?.to_owned()))
        };
        let wd = match watcher.by_dir.get(dir) {
            Some(&wd) => wd,
            None => {
                match watching::add_watch(watcher.fd.as_fd(), dir) {
                    Ok(wd) => {
                        // The same directory under another path (a bind mount) gets the same
                        // descriptor back: then it joins that watch.
                        if !watcher.by_wd.contains_key(&wd) {
                            watcher.by_dir.insert(dir.to_path_buf(), wd);
                            watcher.by_wd.insert(
                                wd,
                                Watch {
                                    dir: dir.to_path_buf(),
                                    keys: HashSet::new(),
                                },
                            );
                        }
                        wd
                    }
                    Err(e) => {
                        log::debug!("cannot watch {}: {e}; revalidating instead", dir.display());
                        return None;
                    }
                }
            }
        };
        watcher.by_wd.get_mut(&wd)?.keys.insert(key.to_string());
        Some(Watched { wd, name })
    }

    /// `key` no longer depends on watch `wd`; the last key to go removes the watch.
    fn release(&mut self, key: &str, wd: i32) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let Some(watch) = watcher.by_wd.get_mut(&wd) else {
            return;
        };
        watch.keys.remove(key);
        if watch.keys.is_empty() {
            if let Some(watch) = watcher.by_wd.remove(&wd) {
                watcher.by_dir.remove(&watch.dir);
            }
            // Fails only if the kernel removed it already (its IGNORED event is on the way).
            if let Err(e) = watching::remove_watch(watcher.fd.as_fd(), wd) {
                log::debug!("inotify_rm_watch: {e}");
            }
        }
    }

    /// Whether a file of `len` bytes may be cached.
    pub fn accepts(&self, len: u64) -> bool {
        len <= MAX_CACHED_FILE && (len as usize) < self.budget
    }

    /// The file entry for `key`. If it was last checked over half a second ago, `key` is
    /// resolved again through `files`, and the entry is dropped unless it still leads to
    /// the same version of the same file.
    pub fn get(&mut self, key: &str, files: &StaticFiles, now: Instant) -> Option<&CachedFile> {
        let Some(Slot {
            entry: Entry::File(entry),
            ..
        }) = self.map.get_mut(key)
        else {
            return None;
        };
        if now.saturating_duration_since(entry.checked_at) >= REVALIDATE_EVERY {
            let current = files.current(key).map(|m| Identity::of(&m));
            if current != Some(entry.identity) {
                log::debug!("cache: {key} now leads to another file, or none; dropped");
                self.remove(key);
                return None;
            }
            entry.checked_at = now;
        }
        match self.map.get(key) {
            Some(Slot {
                entry: Entry::File(entry),
                ..
            }) => Some(entry),
            _ => None,
        }
    }

    /// Adds a file entry, evicting the oldest ones until it fits; `opened` is the file it
    /// was read from, to find the directory to watch. Hands the entry back, kept (`Ok`) or,
    /// when it is larger than the whole budget, not kept (`Err`): either way, the response
    /// is served from it, with no second read of the file.
    pub fn insert(
        &mut self,
        key: String,
        file: CachedFile,
        opened: &File,
    ) -> Result<&CachedFile, Box<CachedFile>> {
        self.remove(&key);
        let slot = Slot {
            entry: Entry::File(file),
            watch: None,
        };
        let cost = slot.cost(&key);
        if cost > self.budget {
            return match slot.entry {
                Entry::File(file) => Err(Box::new(file)),
                Entry::Listing { .. } => unreachable!("built as a file entry just above"),
            };
        }
        self.make_room(cost);
        let watch = self.acquire(&key, opened.as_fd(), false);
        match &self.put(key, Slot { watch, ..slot }, cost).entry {
            Entry::File(file) => Ok(file),
            Entry::Listing { .. } => unreachable!("put as a file entry just above"),
        }
    }

    /// The page for `listing`, requested as `key`: from memory if it was rendered from this
    /// version of this directory and nothing in the directory changed since, else rendered
    /// now and kept. A listing is kept only while its directory is watched: without
    /// inotify, a file's new size or time would not show.
    pub fn listing(
        &mut self,
        key: &str,
        listing: &Directory,
        render: impl FnOnce(&Directory) -> io::Result<Vec<u8>>,
    ) -> io::Result<Rc<[u8]>> {
        let version = listing.version()?;
        if let Some(Slot {
            entry: Entry::Listing { html, version: v },
            ..
        }) = self.map.get(key)
            && *v == version
        {
            return Ok(Rc::clone(html));
        }
        self.remove(key);
        // Watch first, render second: a change during the render then shows as an event.
        let watch = self.acquire(key, listing.dir(), true);
        let html: Rc<[u8]> = match render(listing) {
            Ok(page) => page.into(),
            Err(e) => {
                if let Some(w) = watch {
                    self.release(key, w.wd);
                }
                return Err(e);
            }
        };
        let Some(watch) = watch else {
            return Ok(html);
        };
        let slot = Slot {
            entry: Entry::Listing {
                html: Rc::clone(&html),
                version,
            },
            watch: None,
        };
        let cost = slot.cost(key);
        if cost > self.budget {
            self.release(key, watch.wd);
            return Ok(html);
        }
        // Evicting cannot remove this watch: `key` holds it already.
        self.make_room(cost);
        self.put(
            key.to_string(),
            Slot {
                watch: Some(watch),
                ..slot
            },
            cost,
        );
        Ok(html)
    }

    /// Evicts the oldest entries until `cost` more bytes fit.
    fn make_room(&mut self, cost: usize) {
        while self.bytes + cost > self.budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(&oldest);
        }
    }

    fn put(&mut self, key: String, slot: Slot, cost: usize) -> &Slot {
        self.bytes += cost;
        self.order.push_back(key.clone());
        // The key was removed before: the slot goes in fresh, and comes back without a
        // second lookup.
        match self.map.entry(key) {
            MapEntry::Occupied(mut old) => {
                old.insert(slot);
                old.into_mut()
            }
            MapEntry::Vacant(place) => place.insert(slot),
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= old.cost(key);
            if let Some(watched) = old.watch {
                self.release(key, watched.wd);
            }
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

/// What one event of the watcher says, in the cache's terms.
// Off Linux (and with `portable-fallbacks`) there is no watcher, so nothing makes these.
#[allow(dead_code)]
#[derive(Debug)]
enum Change {
    /// The kernel's queue overflowed and events were lost: anything may have changed.
    Overflow,
    /// The kernel removed watch `wd`: its directory is gone, or we removed the watch.
    WatchGone(i32),
    /// The directory of watch `wd` was itself deleted or moved.
    Dir(i32),
    /// The entry with this name in the directory of watch `wd` changed.
    Name(i32, Vec<u8>),
}

/// The operating system's side of watching: inotify(7), on Linux. Everything that differs
/// between systems is in these few functions, so the cache above has no `cfg` at all.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable-fallbacks")
))]
mod watching {
    use std::ffi::OsString;
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
    use std::os::unix::ffi::OsStringExt;
    use std::path::{Path, PathBuf};

    use rustix::fs::inotify::{self, ReadFlags, WatchFlags};
    use rustix::io::Errno;

    use super::Change;

    /// A new inotify instance, non-blocking (the loop reads it until WouldBlock).
    pub(super) fn init() -> io::Result<OwnedFd> {
        let flags = inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC;
        Ok(inotify::init(flags)?)
    }

    /// Watches the directory `dir` for every change that can make an entry stale.
    pub(super) fn add_watch(fd: BorrowedFd<'_>, dir: &Path) -> io::Result<i32> {
        let mask = WatchFlags::MODIFY
            | WatchFlags::ATTRIB
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        Ok(inotify::add_watch(fd, dir, mask)?)
    }

    /// Removes watch `wd` (`inotify_rm_watch`).
    pub(super) fn remove_watch(fd: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
        Ok(inotify::remove_watch(fd, wd)?)
    }

    /// Reads every pending event, until WouldBlock, and hands each to `each`.
    pub(super) fn read_changes(fd: BorrowedFd<'_>, mut each: impl FnMut(Change)) -> io::Result<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(fd, &mut buf);
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(Errno::AGAIN) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                each(Change::Overflow);
            } else if flags.contains(ReadFlags::IGNORED) {
                each(Change::WatchGone(event.wd()));
            } else if flags.intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF) {
                each(Change::Dir(event.wd()));
            } else if let Some(name) = event.file_name() {
                each(Change::Name(event.wd(), name.to_bytes().to_vec()));
            }
        }
    }

    /// The path of the open file `fd` with every symlink resolved, as the kernel sees it:
    /// the link `/proc/self/fd/N` points there.
    pub(super) fn real_path(fd: BorrowedFd<'_>) -> Option<PathBuf> {
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let real = rustix::fs::readlink(proc_path.as_str(), Vec::new()).ok()?;
        Some(PathBuf::from(OsString::from_vec(real.into_bytes())))
    }
}

/// Without inotify (other systems, or the `portable-fallbacks` feature): no watcher is made,
/// and every entry is kept fresh by resolving its URL again (see the module docs).
#[cfg(not(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable-fallbacks")
)))]
mod watching {
    use std::io;
    use std::os::fd::{BorrowedFd, OwnedFd};
    use std::path::{Path, PathBuf};

    use super::Change;

    /// `Unsupported`: the cache then runs without a watcher.
    pub(super) fn init() -> io::Result<OwnedFd> {
        Err(io::ErrorKind::Unsupported.into())
    }

    // Never called, as there is no watcher; here so that the cache reads the same everywhere.
    pub(super) fn add_watch(_: BorrowedFd<'_>, _: &Path) -> io::Result<i32> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(super) fn remove_watch(_: BorrowedFd<'_>, _: i32) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn read_changes(_: BorrowedFd<'_>, _: impl FnMut(Change)) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn real_path(_: BorrowedFd<'_>) -> Option<PathBuf> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `dir/name`, opens it, and makes the entry `/name` the server would.
    fn entry(
        dir: &std::path::Path,
        name: &str,
        content: &[u8],
        now: Instant,
    ) -> (CachedFile, File) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write");
        let file = File::open(&path).expect("open");
        let meta = file.metadata().expect("meta");
        (
            CachedFile::new(&meta, content.to_vec(), "text/plain".into(), now),
            file,
        )
    }

    fn put(cache: &mut FileCache, dir: &std::path::Path, name: &str, content: &[u8], now: Instant) {
        let (e, f) = entry(dir, name, content, now);
        let _ = cache.insert(format!("/{name}"), e, &f);
    }

    /// The watches the kernel holds on the cache's inotify descriptor.
    fn kernel_watches(cache: &FileCache) -> usize {
        let fd = cache.watch_fd().expect("inotify");
        std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .expect("fdinfo")
            .lines()
            .filter(|l| l.starts_with("inotify wd:"))
            .count()
    }

    #[test]
    fn bounded_and_evicts_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = StaticFiles::new(dir.path()).expect("root");
        let now = Instant::now();
        let mut cache = FileCache::new(3 * (1000 + 2 + 10 + 256));
        for name in ["a", "b", "c", "d"] {
            put(&mut cache, dir.path(), name, &[b'x'; 1000], now);
        }
        assert_eq!(cache.len(), 3);
        assert!(
            cache.get("/a", &files, now).is_none(),
            "the oldest was not evicted"
        );
        assert!(cache.get("/d", &files, now).is_some());
        assert!(cache.bytes() <= 3 * (1000 + 2 + 10 + 256));
    }

    #[test]
    #[cfg_attr(
        feature = "portable-fallbacks",
        ignore = "inotify's behaviour; without it, see change_on_disk_is_seen_after_a_second"
    )]
    fn inotify_drops_a_changed_file_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = StaticFiles::new(dir.path()).expect("root");
        let now = Instant::now();
        let mut cache = FileCache::new(1 << 20);
        assert!(cache.watch_fd().is_some(), "inotify is available on Linux");
        // Both files exist before the directory is watched.
        let (f, f_file) = entry(dir.path(), "f", b"one", now);
        let (g, g_file) = entry(dir.path(), "g", b"other", now);
        let _ = cache.insert("/f".into(), f, &f_file);
        let _ = cache.insert("/g".into(), g, &g_file);
        assert_eq!(cache.watch_count(), 1, "one directory, one watch");
        std::fs::write(dir.path().join("f"), b"two!").expect("rewrite");
        cache.on_watch_event();
        assert!(
            cache.get("/f", &files, now).is_none(),
            "stale entry survived the event"
        );
        assert!(
            cache.get("/g", &files, now).is_some(),
            "an unchanged file was dropped"
        );
        // A new sidecar drops its file too.
        std::fs::write(dir.path().join("g.gz"), b"zz").expect("sidecar");
        cache.on_watch_event();
        assert!(cache.get("/g", &files, now).is_none());
        assert_eq!(
            cache.watch_count(),
            0,
            "the last entry took its watch along"
        );
    }

    #[test]
    fn change_on_disk_is_seen_after_a_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = StaticFiles::new(dir.path()).expect("root");
        let now = Instant::now();
        let mut cache = FileCache::new(1 << 20);
        put(&mut cache, dir.path(), "f", b"one", now);
        std::fs::write(dir.path().join("f"), b"two!").expect("rewrite");
        // Within the second: still served from memory.
        assert!(cache.get("/f", &files, now).is_some());
        // After it: resolved again, found changed, dropped.
        assert!(
            cache
                .get("/f", &files, now + Duration::from_secs(1))
                .is_none()
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn a_repointed_symlink_is_seen_after_a_second() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let files = StaticFiles::new(root).expect("root");
        let now = Instant::now();
        let mut cache = FileCache::new(1 << 20);
        put(&mut cache, root, "v1/page.txt", b"one", now);
        std::fs::create_dir(root.join("v2")).expect("mkdir");
        std::fs::write(root.join("v2/page.txt"), b"two").expect("write");
        std::os::unix::fs::symlink("v1", root.join("current")).expect("link");
        let f = File::open(root.join("current/page.txt")).expect("open");
        let e = CachedFile::new(
            &f.metadata().expect("meta"),
            b"one".to_vec(),
            "t".into(),
            now,
        );
        let _ = cache.insert("/current/page.txt".into(), e, &f);
        // Re-pointed the way deploy tools do it: a new link renamed over the old one.
        std::os::unix::fs::symlink("v2", root.join("next")).expect("link");
        std::fs::rename(root.join("next"), root.join("current")).expect("rename");
        // Nothing changed inside v1, so inotify says nothing; resolving the URL again does.
        cache.on_watch_event();
        let later = now + Duration::from_secs(1);
        assert!(cache.get("/current/page.txt", &files, later).is_none());
        assert!(cache.get("/v1/page.txt", &files, later).is_some());
    }

    #[test]
    #[cfg_attr(
        feature = "portable-fallbacks",
        ignore = "counts inotify watches, and there are none"
    )]
    fn watches_are_counted_and_released_on_eviction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = Instant::now();
        // Room for about ten entries of 100 bytes.
        let mut cache = FileCache::new(10 * (100 + 300));
        for i in 0..200 {
            put(
                &mut cache,
                dir.path(),
                &format!("d{i}/f"),
                &[b'x'; 100],
                now,
            );
        }
        assert!(cache.len() <= 10, "{} entries", cache.len());
        assert_eq!(
            cache.watch_count(),
            cache.len(),
            "one watch per live directory"
        );
        assert_eq!(kernel_watches(&cache), cache.watch_count());
        // Two entries in one directory share one watch, released with the second.
        put(&mut cache, dir.path(), "shared/a", b"a", now);
        put(&mut cache, dir.path(), "shared/b", b"b", now);
        let before = cache.watch_count();
        cache.remove("/shared/a");
        assert_eq!(cache.watch_count(), before);
        cache.remove("/shared/b");
        assert_eq!(cache.watch_count(), before - 1);
        assert_eq!(kernel_watches(&cache), cache.watch_count());
    }
}
