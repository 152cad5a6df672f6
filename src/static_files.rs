//! From a request target to an open file under the document root, safely.
//!
//! Two steps, and both must agree before a byte is served:
//!
//! 1. [`map_target`] works on the text of the target alone. It drops the query, splits the
//!    path into segments, percent-decodes each one, refuses NUL, backslash and encoded `/`
//!    inside a segment, resolves `.` and `..` without ever going above the root, and hides
//!    dotfiles. Its output is a relative path made only of plain names.
//! 2. [`StaticFiles::open`] joins that path onto the canonical root, asks the filesystem where
//!    it really leads (`canonicalize` follows every symlink), and refuses anything outside the
//!    root. Then it opens the file and checks that it is a regular file.
//!
//! Joining the raw URL onto the root, as many small servers do, lets `/../../etc/passwd`
//! walk out. Here the only way from a URL to a path is through these two checks.

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::encoding::Coding;
use crate::error::HttpError;

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
    for raw in path.split('/') {
        let segment: Vec<u8> = percent_decode_str(raw).collect();
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
        trailing_slash: path.ends_with('/'),
    })
}

/// The path part of an origin-form or absolute-form target, without query or fragment.
fn origin_path(target: &str) -> Option<&str> {
    let without_query = target.split(['?', '#']).next().unwrap_or("");
    if without_query.starts_with('/') {
        return Some(without_query);
    }
    // absolute-form: scheme "://" authority path
    let (scheme, rest) = without_query.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    Some(rest.find('/').map_or("/", |i| &rest[i..]))
}

/// What a target resolved to on disk.
#[derive(Debug)]
pub enum Resolved {
    /// A regular file, open for reading. (Boxed: it is much larger than the others.)
    File(Box<FoundFile>),
    /// A directory named without its trailing slash: redirect to this URL path.
    Redirect(String),
    /// A directory listing (only with `--list-directories`), as HTML.
    Listing(String),
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
    /// The canonical path of what was opened.
    pub real_path: PathBuf,
    /// A sidecar exists, so the response depends on `Accept-Encoding` (`Vary`).
    pub vary: bool,
}

/// How files are served: the rules from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--serve-dotfiles`: serve names that start with `.`.
    pub serve_dotfiles: bool,
    /// `--follow-symlinks`: follow symlinks even when they lead outside the root.
    pub follow_symlinks: bool,
    /// `--list-directories`: list directories that have no index.html.
    pub list_directories: bool,
    /// `--cache-control`: the value added to 200, 206 and 304 responses.
    pub cache_control: Option<String>,
}

/// The document root and the rules for serving from it.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    root: PathBuf,
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
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(StaticFiles { root, options })
    }

    /// The canonical document root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The serving options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Resolves a request target to an open file, a redirect or a listing (step 2 above).
    /// `codings` are the sidecar codings the client accepts, best first.
    pub fn open(&self, target: &str, codings: &[Coding]) -> Result<Resolved, HttpError> {
        let mapped = map_target(target, self.options.serve_dotfiles)?;
        let mut path = self.root.join(mapped.to_path());
        let (file, meta, real) = self.open_inside(&path)?;
        if meta.is_dir() {
            if !mapped.trailing_slash {
                return Ok(Resolved::Redirect(mapped.url_path(true)));
            }
            let dir = path.clone();
            path.push("index.html");
            return match self.open_inside(&path) {
                Ok((file, meta, real)) => self.found(file, meta, &path, real, codings),
                Err(HttpError::NotFound) if self.options.list_directories => {
                    crate::listing::render(
                        &dir,
                        &mapped.url_path(true),
                        self.options.serve_dotfiles,
                    )
                    .map(Resolved::Listing)
                    .map_err(io_to_http)
                }
                Err(e) => Err(e),
            };
        }
        if mapped.trailing_slash {
            // `/file.txt/` names a directory that is not there.
            return Err(HttpError::NotFound);
        }
        self.found(file, meta, &path, real, codings)
    }

    /// A regular file was found at `path`: look for a sidecar the client accepts.
    fn found(
        &self,
        file: File,
        meta: Metadata,
        path: &Path,
        real_path: PathBuf,
        codings: &[Coding],
    ) -> Result<Resolved, HttpError> {
        if !meta.is_file() {
            return Err(HttpError::NotFound); // no FIFOs, devices or sockets
        }
        let content_type = content_type(path);
        // Which sidecars exist? Even a client that accepts none of them must be told that
        // the response depends on Accept-Encoding (Vary), so look for both.
        let mut sidecars = [Coding::Brotli, Coding::Gzip].map(|coding| {
            let mut name = path.as_os_str().to_owned();
            name.push(coding.suffix());
            self.open_inside(Path::new(&name))
                .ok()
                .filter(|(_, meta, _)| meta.is_file())
                .map(|(file, meta, real)| (coding, file, meta, real))
        });
        let vary = sidecars.iter().any(Option::is_some);
        // The client's most preferred coding that has a sidecar.
        for wanted in codings {
            let slot = sidecars
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|(c, _, _, _)| c == wanted));
            if let Some((coding, file, meta, real_path)) = slot.and_then(Option::take) {
                return Ok(Resolved::File(Box::new(FoundFile {
                    file,
                    meta,
                    content_type,
                    coding: Some(coding),
                    real_path,
                    vary,
                })));
            }
        }
        Ok(Resolved::File(Box::new(FoundFile {
            file,
            meta,
            content_type,
            coding: None,
            real_path,
            vary,
        })))
    }

    /// Opens `path` if, with every symlink followed, it is still inside the root.
    fn open_inside(&self, path: &Path) -> Result<(File, Metadata, PathBuf), HttpError> {
        let real = path.canonicalize().map_err(io_to_http)?;
        if !real.starts_with(&self.root) && !self.options.follow_symlinks {
            log::debug!("refused {}: it leads outside the root", path.display());
            return Err(HttpError::NotFound);
        }
        // O_NONBLOCK: opening a FIFO would otherwise block the whole loop until a writer
        // appears. On regular files the flag does nothing.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&real)
            .map_err(io_to_http)?;
        // fstat on the open file: what we check is what we serve, even if the path changes.
        let meta = file.metadata().map_err(io_to_http)?;
        Ok((file, meta, real))
    }
}

fn io_to_http(e: io::Error) -> HttpError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => HttpError::Forbidden,
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

/// Encodes a name for use in a URL path segment.
pub fn encode_segment(name: &str) -> String {
    utf8_percent_encode(name, PATH_SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
