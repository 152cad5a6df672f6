//! From a request target to an open file under the document root, safely.
//!
//! Two steps, and the second is the kernel's, not ours:
//!
//! 1. [`map_target`] works on the text of the target alone. It drops the query, splits the
//!    path into segments, percent-decodes each one, refuses NUL, backslash and encoded `/`
//!    inside a segment, resolves `.` and `..` without ever going above the root, and hides
//!    dotfiles. Its output is a relative path made only of plain names.
//! 2. [`StaticFiles::open`] hands that relative path to `openat2(2)` together with a
//!    descriptor of the root and `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`. The kernel
//!    follows the path, symlinks included, and fails with `EXDEV` the moment it would step
//!    outside the root: an absolute symlink, or a `..` (in a link's target) that climbs
//!    above it. A symlink that stays inside the root works. Then `fstat` on the open file
//!    says what it is; only regular files are served.
//!
//! Why not "canonicalize the path, check that it starts with the root, then open it"? That
//! is three system calls, and a symlink swapped in between the check and the open leads the
//! open wherever the attacker likes: a race that anyone who can write inside the root wins
//! about one request in twenty. With `openat2` the check *is* the open, so there is no
//! window. Every open goes this way: the file, its `.br`/`.gz` sidecars, `index.html`, the
//! directory of a listing and the symlinks listed in it.
//!
//! `--follow-symlinks` is the documented opt-in to links that leave the root: then the
//! kernel follows them (still without magic links such as `/proc/self/fd/N`).
//!
//! Kernels older than 5.6 lack `openat2` (`ENOSYS`), and other systems have none (nor has
//! Linux with the `portable-fallbacks` feature). There the path is walked one name at a time
//! with `openat(O_NOFOLLOW)` from the root, which refuses *every* symlink (404), inside the
//! root or not: safe, and stricter than with `openat2`. Without `O_PATH` (Linux's), the root
//! and the directories on the way are opened for reading, which needs read permission.
//!
//! The root itself is opened by the path it was given, and that path is opened again at
//! most four times a second: a root that is a symlink re-pointed by a deploy (`--root
//! /srv/site/current`) is followed within a second (with the cache's own re-check), like
//! nginx resolving its root per request but without paying for it on every request.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::http::encoding::Coding;
use crate::http::error::HttpError;

/// Characters percent-encoded when a path is written back into a `Location` header.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A target mapped to a path relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedPath {
    /// Decoded segments, with `.` and `..` already resolved. Empty for the root itself.
    pub segments: Vec<Vec<u8>>,
    /// The target's path ended in `/` (it names a directory).
    pub trailing_slash: bool,
}

impl MappedPath {
    /// The relative filesystem path.
    pub fn to_path(&self) -> PathBuf {
        self.segments.iter().map(|s| OsStr::from_bytes(s)).collect()
    }

    /// The canonical URL path, percent-encoded, with a trailing slash if `slash`.
    /// Built from the decoded segments, so it never starts with `//` (which a browser would
    /// read as another host).
    pub fn url_path(&self, slash: bool) -> String {
        let mut url = String::from("/");
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                url.push('/');
            }
            url.extend(percent_encoding::percent_encode(segment, PATH_SEGMENT));
        }
        if slash && !self.segments.is_empty() {
            url.push('/');
        }
        url
    }
}

/// Maps a request target to a safe relative path (step 1 above). Knows nothing of the disk.
///
/// Accepts origin-form (`/a/b?q`) and absolute-form (`http://host/a/b`, RFC 9112 section
/// 3.2.2) targets. `serve_dotfiles` allows segments that start with `.`.
pub fn map_target(target: &str, serve_dotfiles: bool) -> Result<MappedPath, HttpError> {
    let path = origin_path(target).ok_or(HttpError::BadPath)?;
    let mut segments: Vec<Vec<u8>> = Vec::new();
    // Whether the path names a directory: it ends in `/`, or in `.` or `..` (`/a/.` is
    // `/a/`, as a browser resolves it), so `/file/.` is no more a file than `/file/`.
    let mut trailing_slash = false;
    for raw in path.split('/') {
        // A `%` not followed by two hex digits is no escape (RFC 3986 section 2.1): 400,
        // as nginx says, rather than a name looked up with the `%` in it.
        if !escapes_are_valid(raw.as_bytes()) {
            return Err(HttpError::BadPath);
        }
        let segment: Vec<u8> = percent_decode_str(raw).collect();
        trailing_slash = matches!(segment.as_slice(), b"" | b"." | b"..");
        match segment.as_slice() {
            b"" | b"." => {}
            b".." => {
                // `..` at the root would leave it: that is not a path this server has.
                if segments.pop().is_none() {
                    return Err(HttpError::BadPath);
                }
            }
            s if s.iter().any(|&b| b == 0 || b == b'/' || b == b'\\') => {
                return Err(HttpError::BadPath);
            }
            s if s[0] == b'.' && !serve_dotfiles => return Err(HttpError::NotFound),
            _ => segments.push(segment),
        }
    }
    Ok(MappedPath {
        segments,
        trailing_slash,
    })
}

/// Whether every `%` in `raw` starts a `%XX` escape.
fn escapes_are_valid(raw: &[u8]) -> bool {
    raw.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || raw
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// The key a request path is cached under: the same for every spelling of one path, so
/// that `/a/./b`, `/a//b`, `/%61/b` and `/a/b` share one entry (and one rendered listing)
/// instead of each filling the cache with a copy. It is [`MappedPath::url_path`], the
/// normal form; a path already in that form, as nearly every request is, is its own key,
/// found without decoding or allocating. `None` for a path that names nothing.
pub fn cache_key(path: &str) -> Option<Cow<'_, str>> {
    if is_normal_form(path) {
        return Some(Cow::Borrowed(path));
    }
    let mapped = map_target(path, true).ok()?;
    Some(Cow::Owned(mapped.url_path(mapped.trailing_slash)))
}

/// Whether `path` is already what [`MappedPath::url_path`] would write: no empty, `.` or
/// `..` segment (a trailing slash aside), and only bytes it writes as they are (so no `%`).
/// One pass, with no allocation: this runs on every request, cached ones included.
fn is_normal_form(path: &str) -> bool {
    /// The bytes `url_path` leaves as they are: visible ASCII outside `PATH_SEGMENT`.
    const RAW: [bool; 256] = {
        let mut raw = [false; 256];
        let mut b = 0x21;
        while b < 0x7f {
            raw[b] = true;
            b += 1;
        }
        let encoded = b"\"#%/<>?\\`{}";
        let mut i = 0;
        while i < encoded.len() {
            raw[encoded[i] as usize] = false;
            i += 1;
        }
        raw
    };
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut start = 1; // of the current segment
    for i in 1..=bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(b'/');
        if b == b'/' {
            let segment = &bytes[start..i];
            let last = i == bytes.len();
            if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
                return false;
            }
            start = i + 1;
        } else if !RAW[usize::from(b)] {
            return false;
        }
    }
    true
}

/// The path part of an origin-form or absolute-form target, without query or fragment.
fn origin_path(target: &str) -> Option<&str> {
    let without_query = target.split(['?', '#']).next().unwrap_or("");
    if without_query.starts_with('/') {
        return Some(without_query);
    }
    // absolute-form: scheme "://" authority path. The authority must be what a Host header
    // may say (a host and an optional port), so not empty (`http:///x`, `http://:80/x`),
    // and without the userinfo that RFC 9110 section 4.2.4 forbids in an http URI
    // (`http://user@h/x`): refused as nginx refuses them.
    let (scheme, rest) = without_query.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let authority = authority.as_bytes();
    if !crate::http::request::is_valid_host(authority) || !escapes_are_valid(authority) {
        return None;
    }
    Some(path)
}

/// What a target resolved to on disk.
#[derive(Debug)]
pub enum Resolved {
    /// A regular file, open for reading. (Boxed: it is much larger than the others.)
    File(Box<FoundFile>),
    /// A directory named without its trailing slash: redirect to this URL path.
    Redirect(String),
    /// A directory to list (only with `--list-directories`), open and ready to render.
    Directory(Box<Directory>),
}

/// A directory to list, opened by [`StaticFiles::open`] inside the root; the listing
/// ([`crate::files::listing::render`]) reads it through its descriptor, never by path.
#[derive(Debug)]
pub struct Directory {
    /// The open directory.
    pub(crate) dir: OwnedFd,
    /// The root it was opened from: symlinks in the listing resolve from here, confined as
    /// when they are served.
    pub(crate) root: Arc<OwnedFd>,
    /// The directory's path relative to the root.
    pub(crate) rel: PathBuf,
    /// Its URL path, percent-encoded, ending in `/`.
    pub(crate) url_path: String,
    /// `--serve-dotfiles`.
    pub(crate) show_dotfiles: bool,
    /// `--follow-symlinks`.
    pub(crate) follow_symlinks: bool,
    /// `--max-listing-entries`.
    pub(crate) max_entries: usize,
}

impl Directory {
    /// The open directory, for watching it.
    pub fn dir(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// What identifies this version of the directory: device, inode and modification time
    /// (which changes whenever an entry is added, removed or renamed).
    pub fn version(&self) -> io::Result<(u64, u64, i64, i64)> {
        let st = rustix::fs::fstat(&self.dir)?;
        Ok((
            st.st_dev as u64, // `dev_t` is signed on macOS
            st.st_ino,
            st.st_mtime as i64,
            st.st_mtime_nsec as i64,
        ))
    }
}

/// A regular file found for a request, possibly a precompressed sidecar of it.
#[derive(Debug)]
pub struct FoundFile {
    /// The open file (the sidecar, if one was chosen).
    pub file: File,
    /// Its metadata, from `fstat` on the open file.
    pub meta: Metadata,
    /// The `Content-Type` to send: always the original file's type.
    pub content_type: String,
    /// The sidecar's coding, if the bytes are a `.br` or `.gz` sidecar.
    pub coding: Option<Coding>,
    /// A sidecar exists, so the response depends on `Accept-Encoding` (`Vary`).
    pub vary: bool,
}

/// Directory listings show at most this many entries unless configured otherwise.
pub const DEFAULT_MAX_LISTING_ENTRIES: usize = 10_000;

/// How files are served: the rules from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--serve-dotfiles`: serve names that start with `.`.
    pub serve_dotfiles: bool,
    /// `--follow-symlinks`: follow symlinks even when they lead outside the root.
    pub follow_symlinks: bool,
    /// `--list-directories`: list directories that have no index.html.
    pub list_directories: bool,
    /// `--max-listing-entries`: a listing shows at most this many entries.
    pub max_listing_entries: usize,
    /// `--cache-control`: the value added to 200, 206 and 304 responses.
    pub cache_control: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            serve_dotfiles: false,
            follow_symlinks: false,
            list_directories: false,
            max_listing_entries: DEFAULT_MAX_LISTING_ENTRIES,
            cache_control: None,
        }
    }
}

/// How often the root's path is opened again, to follow a re-pointed root symlink.
const ROOT_RECHECK: Duration = Duration::from_millis(250);

/// The open document root.
#[derive(Debug)]
struct Root {
    /// A descriptor of the root directory ([`LOOKUP_ONLY`]): every open starts from it. Shared
    /// (`Arc`) with the listings rendered from it, which may outlive a root change.
    fd: Arc<OwnedFd>,
    /// Device and inode of that directory, to tell whether the path now leads elsewhere.
    id: (u64, u64),
    /// When the path was last opened.
    checked_at: Instant,
}

/// The document root and the rules for serving from it.
#[derive(Debug)]
pub struct StaticFiles {
    /// The root as configured, made absolute.
    root_path: PathBuf,
    /// The open root. Re-opening it is a detail of `&self` lookups, hence the interior
    /// mutability; a `RefCell` is enough, since only the loop's one thread looks files up
    /// (`StaticFiles` stays `Send`, so a server can be moved to the thread that runs it).
    root: RefCell<Root>,
    options: Options,
}

impl StaticFiles {
    /// Opens the document root with default options. Fails if it is missing or not a
    /// directory.
    pub fn new(root: &Path) -> io::Result<Self> {
        Self::with_options(root, Options::default())
    }

    /// Opens the document root with the given options.
    pub fn with_options(root: &Path, options: Options) -> io::Result<Self> {
        let root_path = std::path::absolute(root)?;
        let (fd, id) = open_root(&root_path)?;
        Ok(StaticFiles {
            root_path,
            root: RefCell::new(Root {
                fd: Arc::new(fd),
                id,
                checked_at: Instant::now(),
            }),
            options,
        })
    }

    /// The document root's path, as configured (made absolute).
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// The serving options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The root's descriptor, after opening its path again if that was over 250 ms ago
    /// and the path now leads to another directory.
    fn root_fd(&self) -> Arc<OwnedFd> {
        // Borrowed only here, and nothing below calls back into `root_fd`.
        let mut root = self.root.borrow_mut();
        let now = Instant::now();
        if now.saturating_duration_since(root.checked_at) >= ROOT_RECHECK {
            root.checked_at = now;
            match open_root(&self.root_path) {
                Ok((fd, id)) if id != root.id => {
                    log::info!(
                        "{} now leads to another directory",
                        self.root_path.display()
                    );
                    root.fd = Arc::new(fd);
                    root.id = id;
                }
                Ok(_) => {}
                Err(e) => log::warn!(
                    "cannot open the root {} again ({e}); serving from the one open",
                    self.root_path.display()
                ),
            }
        }
        Arc::clone(&root.fd)
    }

    /// Resolves a request target to an open file, a redirect or a listing (step 2 above).
    /// `codings` are the sidecar codings the client accepts, best first.
    pub fn open(&self, target: &str, codings: &[Coding]) -> Result<Resolved, HttpError> {
        let mapped = map_target(target, self.options.serve_dotfiles)?;
        let root = self.root_fd();
        let rel = mapped.to_path();
        let (file, meta) = self.open_inside(&root, &rel)?;
        if meta.is_dir() {
            if !mapped.trailing_slash {
                return Ok(Resolved::Redirect(mapped.url_path(true)));
            }
            // From the root again, not from `file`: the kernel's "beneath" is the root's.
            // An index.html that is not a regular file (a directory, a FIFO) counts as none.
            let index = rel.join("index.html");
            let index_file = self.open_inside(&root, &index).and_then(|(f, m)| {
                if m.is_file() {
                    Ok((f, m))
                } else {
                    Err(HttpError::NotFound)
                }
            });
            return match index_file {
                Ok((file, meta)) => self.found(&root, file, meta, &index, codings),
                Err(HttpError::NotFound) if self.options.list_directories => {
                    Ok(Resolved::Directory(Box::new(Directory {
                        dir: file.into(),
                        root,
                        rel,
                        url_path: mapped.url_path(true),
                        show_dotfiles: self.options.serve_dotfiles,
                        follow_symlinks: self.options.follow_symlinks,
                        max_entries: self.options.max_listing_entries,
                    })))
                }
                Err(e) => Err(e),
            };
        }
        if mapped.trailing_slash {
            // `/file.txt/` names a directory that is not there.
            return Err(HttpError::NotFound);
        }
        self.found(&root, file, meta, &rel, codings)
    }

    /// The metadata of the plain file a request for `target` would get now (no sidecar
    /// exists), or `None` if it would get anything else. The cache revalidates with this,
    /// so that what it checks is exactly what serving would do.
    pub fn current(&self, target: &str) -> Option<Metadata> {
        match self.open(target, &[]) {
            Ok(Resolved::File(found)) if !found.vary => Some(found.meta),
            _ => None,
        }
    }

    /// A regular file was found at `rel`: look for a sidecar the client accepts.
    fn found(
        &self,
        root: &OwnedFd,
        file: File,
        meta: Metadata,
        rel: &Path,
        codings: &[Coding],
    ) -> Result<Resolved, HttpError> {
        if !meta.is_file() {
            return Err(HttpError::NotFound); // no FIFOs, devices or sockets
        }
        let content_type = content_type(rel);
        // Which sidecars exist? Even a client that accepts none of them must be told that
        // the response depends on Accept-Encoding (Vary), so look for both.
        let mut sidecars = [Coding::Brotli, Coding::Gzip].map(|coding| {
            let mut name = rel.as_os_str().to_owned();
            name.push(coding.suffix());
            self.open_inside(root, Path::new(&name))
                .ok()
                .filter(|(_, meta)| meta.is_file())
                .map(|(file, meta)| (coding, file, meta))
        });
        let vary = sidecars.iter().any(Option::is_some);
        // The client's most preferred coding that has a sidecar.
        for wanted in codings {
            let slot = sidecars
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|(c, _, _)| c == wanted));
            if let Some((coding, file, meta)) = slot.and_then(Option::take) {
                return Ok(Resolved::File(Box::new(FoundFile {
                    file,
                    meta,
                    content_type,
                    coding: Some(coding),
                    vary,
                })));
            }
        }
        Ok(Resolved::File(Box::new(FoundFile {
            file,
            meta,
            content_type,
            coding: None,
            vary,
        })))
    }

    /// Opens `rel` below the root for reading (see [`open_beneath`]) and `fstat`s it.
    fn open_inside(&self, root: &OwnedFd, rel: &Path) -> Result<(File, Metadata), HttpError> {
        // O_NONBLOCK: opening a FIFO would otherwise block the whole loop until a writer
        // appears. On regular files the flag does nothing.
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = open_beneath(root.as_fd(), rel, flags, self.options.follow_symlinks)
            .map_err(|e| refused(rel, e))?;
        let file = File::from(fd);
        // fstat on the open file: what we check is what we serve, even if the path changes.
        let meta = file.metadata().map_err(|e| refused(rel, e))?;
        Ok((file, meta))
    }
}

/// Opens the root directory by its path (as an `O_PATH` descriptor on Linux, see
/// [`LOOKUP_ONLY`]), with its identity.
fn open_root(path: &Path) -> io::Result<(OwnedFd, (u64, u64))> {
    let flags = LOOKUP_ONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    Ok((fd, (st.st_dev as u64, st.st_ino)))
}

/// Set once `openat2` has answered `ENOSYS`, so that later opens go straight to the walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `rel` (plain names only, as [`map_target`] makes them; empty for the root itself)
/// relative to the directory `root`, with `flags` (`O_CLOEXEC` is added).
///
/// Unless `follow_symlinks`, the kernel keeps the whole resolution beneath `root`
/// (`RESOLVE_BENEATH`); a path that would leave it fails with `EXDEV`. Magic links
/// (`/proc/self/fd/N`) are never followed. Where `openat2` is missing, the names are walked
/// one by one with `O_NOFOLLOW`, refusing every symlink (`ELOOP` or `ENOTDIR`).
pub fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    follow_symlinks: bool,
) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2(root, rel, flags, follow_symlinks) {
            Err(Errno::NOSYS) => {
                // Info, not a warning: it is the rule on other systems, and safe everywhere.
                log::info!(
                    "no openat2 (Linux before 5.6, or another system): symlinks are refused \
                     unless --follow-symlinks"
                );
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            Err(Errno::AGAIN | Errno::INTR) => {
                // openat2 may ask for a retry when a rename raced the lookup.
                return openat2(root, rel, flags, follow_symlinks).map_err(io::Error::from);
            }
            other => return other.map_err(io::Error::from),
        }
    }
    if follow_symlinks {
        // The opt-in: the kernel follows every link, wherever it leads.
        return rustix::fs::openat(root, rel, flags, Mode::empty()).map_err(io::Error::from);
    }
    open_walking(root, rel, flags)
}

/// `openat2(2)` with `RESOLVE_NO_MAGICLINKS`, and `RESOLVE_BENEATH` unless
/// `follow_symlinks`: the kernel resolves `rel` and keeps it beneath `root`.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable-fallbacks")
))]
fn openat2(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    follow_symlinks: bool,
) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::ResolveFlags;
    let mut resolve = ResolveFlags::NO_MAGICLINKS;
    if !follow_symlinks {
        resolve |= ResolveFlags::BENEATH;
    }
    rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve)
}

/// Other systems have no `openat2` (and the `portable-fallbacks` feature hides it): say so
/// as an old Linux kernel would, and [`open_beneath`] walks instead.
#[cfg(not(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable-fallbacks")
)))]
fn openat2(_: BorrowedFd<'_>, _: &Path, _: OFlags, _: bool) -> rustix::io::Result<OwnedFd> {
    Err(Errno::NOSYS)
}

/// Flags for a descriptor that only serves to look names up from, or to `fstat`: `O_PATH`
/// on Linux, which needs no read permission and opens nothing (not even a FIFO).
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable-fallbacks")
))]
pub(crate) const LOOKUP_ONLY: OFlags = OFlags::PATH;

/// Without `O_PATH`: opened for reading, which needs read permission; `O_NONBLOCK` so that
/// a FIFO does not block the loop, `O_NOCTTY` so that a terminal does not become ours.
#[cfg(not(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable-fallbacks")
)))]
pub(crate) const LOOKUP_ONLY: OFlags = OFlags::RDONLY.union(OFlags::NONBLOCK).union(OFlags::NOCTTY);

/// The fallback without `openat2`: one `openat(O_NOFOLLOW)` per name, each from the
/// directory the previous one opened. No name is `..` (see [`map_target`]), and no symlink
/// is followed, so the walk cannot leave `root`.
fn open_walking(root: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let names: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(Ok(name)),
            Component::CurDir => None,
            _ => Some(Err(io::Error::from(io::ErrorKind::InvalidInput))),
        })
        .collect::<io::Result<_>>()?;
    let Some((last, dirs)) = names.split_last() else {
        return rustix::fs::openat(root, ".", flags, Mode::empty()).map_err(io::Error::from);
    };
    let mut here: Option<OwnedFd> = None;
    for name in dirs {
        let from = here.as_ref().map_or(root, AsFd::as_fd);
        let step_flags = LOOKUP_ONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        here = Some(rustix::fs::openat(from, *name, step_flags, Mode::empty())?);
    }
    let from = here.as_ref().map_or(root, AsFd::as_fd);
    Ok(rustix::fs::openat(
        from,
        *last,
        flags | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// The HTTP error for a failed open of `rel`: 403 when permission is denied, else 404.
/// (A path that leaves the root is simply not there, as far as a client can tell.)
fn refused(rel: &Path, e: io::Error) -> HttpError {
    match e.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::XDEV) => {
            log::debug!("refused /{}: it leads outside the root", rel.display());
            HttpError::NotFound
        }
        Some(Errno::ACCESS | Errno::PERM) => HttpError::Forbidden,
        _ => HttpError::NotFound,
    }
}

/// The `Content-Type` for a path, from its extension, with `charset=utf-8` on text types.
pub fn content_type(path: &Path) -> String {
    // JavaScript modules are JavaScript (RFC 9239), whatever older tables say.
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mjs"))
    {
        return "text/javascript; charset=utf-8".to_string();
    }
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let essence = mime.essence_str();
    let texty = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            essence,
            "application/javascript" | "application/json" | "application/xml" | "image/svg+xml"
        );
    if texty {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling of one path has one cache key; a path already in normal form is its
    /// own key, borrowed.
    #[test]
    fn cache_keys_are_one_per_path() {
        for (spellings, key) in [
            (
                &[
                    "/a/b.txt",
                    "/a/./b.txt",
                    "/a//b.txt",
                    "/x/../a/b.txt",
                    "/%61/b%2Etxt",
                ][..],
                "/a/b.txt",
            ),
            (
                &[
                    "/d/", "/d/./", "/d//", "/%64/", "/d/x/../", "/d/.", "/d/x/..", "/d/%2e",
                ][..],
                "/d/",
            ),
            (&["/a%20b", "/a%20%62"], "/a%20b"),
            (&["/it's(1)", "/it%27s%281%29"], "/it's(1)"),
            (&["/%C3%A9", "/%c3%a9"], "/%C3%A9"),
            (&["http://h/a/b.txt"], "/a/b.txt"),
        ] {
            for spelling in spellings {
                assert_eq!(cache_key(spelling).as_deref(), Some(key), "{spelling}");
            }
        }
        assert!(matches!(cache_key("/a/b.txt"), Some(Cow::Borrowed(_))));
        assert!(matches!(cache_key("/it's(1)"), Some(Cow::Borrowed(_))));
        assert_eq!(cache_key("/../x"), None);
        assert_eq!(cache_key("/a%2fb"), None);
    }

    fn mapped(target: &str) -> Result<String, HttpError> {
        map_target(target, false).map(|m| m.to_path().to_string_lossy().into_owned())
    }

    /// Hostile and ordinary targets, and where each must lead.
    #[test]
    fn path_table() {
        use HttpError::*;
        let cases: &[(&str, Result<&str, HttpError>)] = &[
            ("/", Ok("")),
            ("/index.html", Ok("index.html")),
            ("/a/b.txt?x=../../etc/passwd", Ok("a/b.txt")),
            ("/a/./b/../c", Ok("a/c")),
            ("/a%20b.html", Ok("a b.html")),
            ("/%C3%A9t%C3%A9", Ok("été")),
            ("//etc/passwd", Ok("etc/passwd")),
            ("http://example.com/x/y", Ok("x/y")),
            ("HTTP://example.com", Ok("")),
            ("/..", Err(BadPath)),
            ("/../etc/passwd", Err(BadPath)),
            ("/a/../../etc/passwd", Err(BadPath)),
            ("/%2e%2e/etc/passwd", Err(BadPath)),
            ("/%2E%2E%2Fetc%2Fpasswd", Err(BadPath)),
            ("/a%2f..%2f..%2fetc", Err(BadPath)),
            ("/..%5c..%5cetc", Err(BadPath)),
            ("/a\\b", Err(BadPath)),
            ("/a%00.html", Err(BadPath)),
            ("/.env", Err(NotFound)),
            ("/.git/config", Err(NotFound)),
            ("/a/%2egit/config", Err(NotFound)),
            ("*", Err(BadPath)),
            ("index.html", Err(BadPath)),
            ("ftp://example.com/x", Err(BadPath)),
            ("http:///index.html", Err(BadPath)),
            ("/%ZZ", Err(BadPath)),
            ("/a%2", Err(BadPath)),
            ("/a%", Err(BadPath)),
            ("/100%25", Ok("100%")),
            ("/a?x=%ZZ", Ok("a")),
            ("http://user@example.com/index.html", Err(BadPath)),
            ("http://user:pw@example.com", Err(BadPath)),
            ("http://:80/index.html", Err(BadPath)),
            ("http://:/index.html", Err(BadPath)),
            ("http://h%zz/index.html", Err(BadPath)),
            ("http://[/index.html", Err(BadPath)),
            ("http://h:abc/index.html", Err(BadPath)),
            ("http://[::1]:8080/x", Ok("x")),
            ("http://example.com:8080", Ok("")),
        ];
        for (target, want) in cases {
            let got = mapped(target);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{target}");
        }
    }

    #[test]
    fn trailing_slash_and_url_path() {
        let m = map_target("/docs/a%20b/", false).map_err(|e| e.to_string());
        let m = match m {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        assert!(m.trailing_slash);
        assert_eq!(m.url_path(true), "/docs/a%20b/");
        // A path ending in `.` or `..` names a directory too: `/file/.` is `/file/`.
        for target in ["/index.html/.", "/a/b/..", "/a/%2E", "/."] {
            assert_eq!(
                map_target(target, false).map(|m| m.trailing_slash),
                Ok(true),
                "{target}"
            );
        }
        for target in ["/index.html", "/a/.b", "/a/..b"] {
            assert_eq!(
                map_target(target, true).map(|m| m.trailing_slash),
                Ok(false),
                "{target}"
            );
        }
        let m = map_target("//evil.example//x", false).map_err(|e| e.to_string());
        assert_eq!(
            m.map(|m| m.url_path(true)),
            Ok("/evil.example/x/".to_string())
        );
    }

    #[test]
    fn dotfiles_can_be_allowed() {
        assert_eq!(
            map_target("/.well-known/x", true).map(|m| m.segments.len()),
            Ok(2)
        );
    }

    #[test]
    fn content_types() {
        for (name, want) in [
            ("a.html", "text/html; charset=utf-8"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.json", "application/json; charset=utf-8"),
            ("a.png", "image/png"),
            ("a.mjs", "text/javascript; charset=utf-8"),
            ("a.wasm", "application/wasm"),
            ("a.svg", "image/svg+xml; charset=utf-8"),
            ("a.xml", "text/xml; charset=utf-8"),
            ("a.txt", "text/plain; charset=utf-8"),
            ("a.gz", "application/gzip"),
            ("a.unknownext", "application/octet-stream"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(name)), want, "{name}");
        }
    }

    /// A root with a file, a subdirectory, and links that stay inside or leave it.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(root.join("sub/in.txt"), "in").expect("write");
        std::fs::write(outside.join("secret"), "out").expect("write");
        let link = |to: &str, name: &str| std::os::unix::fs::symlink(to, root.join(name));
        link("sub/in.txt", "up-in").expect("link");
        link("../sub/in.txt", "sub/sibling").expect("link");
        link("../outside/secret", "out").expect("link");
        link("../../outside/secret", "sub/out").expect("link");
        link(&outside.join("secret").to_string_lossy(), "absolute").expect("link");
        link("/proc/self/root/etc/hostname", "magic").expect("link");
        dir
    }

    fn read(root: &OwnedFd, rel: &str, follow: bool, walk: bool) -> io::Result<String> {
        let rel = Path::new(rel);
        let fd = if walk {
            open_walking(root.as_fd(), rel, OFlags::RDONLY | OFlags::CLOEXEC)?
        } else {
            open_beneath(root.as_fd(), rel, OFlags::RDONLY, follow)?
        };
        io::read_to_string(File::from(fd))
    }

    /// The kernel keeps every open inside the root; links that stay inside work. (Without
    /// openat2, with the `portable-fallbacks` feature, [`open_beneath`] walks instead, and
    /// those links are refused too.)
    #[test]
    fn openat2_confines_opens_to_the_root() {
        let walks = cfg!(feature = "portable-fallbacks");
        let dir = tree();
        let (root, _) = open_root(&dir.path().join("root")).expect("root");
        assert_eq!(
            read(&root, "sub/in.txt", false, false).ok().as_deref(),
            Some("in")
        );
        for inside in ["up-in", "sub/sibling"] {
            let got = read(&root, inside, false, false).ok();
            let want = (!walks).then_some("in");
            assert_eq!(got.as_deref(), want, "{inside}");
        }
        for outside in ["out", "sub/out", "absolute", "magic"] {
            let e = read(&root, outside, false, false).expect_err(outside);
            assert!(
                matches!(
                    e.raw_os_error().map(Errno::from_raw_os_error),
                    Some(Errno::XDEV | Errno::LOOP)
                ),
                "{outside}: {e}"
            );
        }
        // The opt-in follows links out, but never magic links (a plain openat, without
        // openat2, has no way to tell them apart).
        assert_eq!(read(&root, "out", true, false).ok().as_deref(), Some("out"));
        assert_eq!(
            read(&root, "absolute", true, false).ok().as_deref(),
            Some("out")
        );
        if !walks {
            assert!(read(&root, "magic", true, false).is_err());
        }
    }

    /// The walk used without openat2 opens plain paths and refuses every symlink.
    #[test]
    fn the_fallback_walk_refuses_every_symlink() {
        let dir = tree();
        let (root, _) = open_root(&dir.path().join("root")).expect("root");
        assert_eq!(
            read(&root, "sub/in.txt", false, true).ok().as_deref(),
            Some("in")
        );
        for link in [
            "up-in",
            "sub/sibling",
            "out",
            "sub/out",
            "absolute",
            "magic",
        ] {
            assert!(read(&root, link, false, true).is_err(), "{link}");
        }
        // A symlinked directory in the middle of the path is refused too.
        std::os::unix::fs::symlink("sub", dir.path().join("root/alias")).expect("link");
        assert!(read(&root, "alias/in.txt", false, true).is_err());
        // openat2 follows it, as it stays inside; the feature makes open_beneath walk too.
        let walks = cfg!(feature = "portable-fallbacks");
        assert_eq!(read(&root, "alias/in.txt", false, false).is_ok(), !walks);
    }
}
