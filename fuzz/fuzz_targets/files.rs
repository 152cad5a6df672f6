//! Fuzz the disk side: random trees of odd files, then every path in them served.
//!
//! The input is a script that builds a tree under a fresh root: directories, files of any
//! size with any modification time (before 1970, after 9999), empty files, FIFOs, symlinks
//! that stay inside, leave the root, dangle or loop, and names of arbitrary bytes (non-UTF-8
//! included). Then every entry is opened as a request would open it, every directory
//! listed, and every link in every listing followed. Nothing may panic; without
//! `--follow-symlinks` no opened file may be the one outside the root; a listing's links
//! must all be relative (`./`, `../`) and lead to something; a file just cached must
//! still be valid when revalidated.
//! Run: `cargo +nightly fuzz run files -- -max_total_time=60`
#![no_main]

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use readyserve::files::cache::{CachedFile, FileCache};
use readyserve::http::conditional::Validators;
use readyserve::http::encoding::Coding;
use readyserve::files::static_files::{Options, Resolved, StaticFiles};

/// The outside file's content: never to be served without `--follow-symlinks`.
const SECRET: &[u8] = b"OUTSIDE-THE-ROOT";

/// This process's scratch directory: on tmpfs when there is one (fast, and it keeps times
/// after the year 9999), holding `root/` (rebuilt for each input) and `outside/`.
fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        // libFuzzer exits without a hook to clean up: remove what earlier runs left behind
        // (their process is gone) instead.
        let prefix = "readyserve-fuzz-files-";
        for entry in fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(prefix)
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let base = parent.join(format!("{prefix}{}", std::process::id()));
        fs::create_dir_all(base.join("outside/dir")).expect("fuzz dir");
        fs::write(base.join("outside/secret"), SECRET).expect("fuzz secret");
        fs::write(base.join("outside/dir/index.html"), SECRET).expect("fuzz secret");
        base
    })
}

/// Reads the script: the input's bytes, then, so that even a short input builds a whole
/// tree, a pseudo-random stream seeded from the input (xorshift64*).
struct Script<'a> {
    data: &'a [u8],
    state: u64,
}

impl<'a> Script<'a> {
    fn new(data: &'a [u8]) -> Self {
        // FNV-1a of the input: the same input always builds the same tree.
        let seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Script {
            data,
            state: seed | 1,
        }
    }

    fn byte(&mut self) -> Option<u8> {
        if let Some((&b, rest)) = self.data.split_first() {
            self.data = rest;
            return Some(b);
        }
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        Some((self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).filter_map(|_| self.byte()).collect()
    }

    /// A name of 1 to 8 arbitrary bytes, but never empty, `.`, `..`, or with `/` or NUL.
    fn name(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte().unwrap_or(0) % 8) + 1;
        let mut name: Vec<u8> = self
            .bytes(len)
            .into_iter()
            .map(|b| if b == b'/' || b == 0 { b'_' } else { b })
            .collect();
        if name.is_empty() || name == b"." || name == b".." {
            name = b"n".to_vec();
        }
        name
    }

    /// A modification time: a few interesting ones, or any 64-bit value.
    fn mtime(&mut self) -> i64 {
        match self.byte().unwrap_or(0) % 8 {
            0 => -1,
            1 => 0,
            2 => 253_402_300_799,
            3 => 253_402_300_800,
            4 => i64::from_le_bytes(self.bytes(8).try_into().unwrap_or([0; 8])) / 4,
            _ => 1_700_000_000,
        }
    }
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn url_of(rel: &[u8]) -> String {
    let segments: Vec<String> = rel
        .split(|&b| b == b'/')
        .filter(|s| !s.is_empty())
        .map(encode)
        .collect();
    format!("/{}", segments.join("/"))
}

/// Builds the tree the script describes under `root`; returns the entries' paths relative
/// to the root (directories first in the list they were made).
fn build(script: &mut Script<'_>, root: &Path) -> Vec<Vec<u8>> {
    let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut all: Vec<Vec<u8>> = Vec::new();
    for _ in 0..200 {
        if all.len() == 40 {
            break;
        }
        let Some(op) = script.byte() else { break };
        if op == 0xff {
            break; // the input can ask for a small tree
        }
        let parent = dirs[usize::from(script.byte().unwrap_or(0)) % dirs.len()].clone();
        let mut rel = parent.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend(script.name());
        let path = root.join(OsStr::from_bytes(&rel));
        let made = match op % 6 {
            0 => fs::create_dir(&path)
                .is_ok()
                .then(|| dirs.push(rel.clone()))
                .is_some(),
            1 | 2 => {
                let len = usize::from(script.byte().unwrap_or(0)) % 64;
                let body = if op % 6 == 2 {
                    Vec::new()
                } else {
                    rel.repeat(len / rel.len().max(1) + 1)
                };
                let time = script.mtime();
                // create_new: never through an existing name, which may be a symlink to a
                // FIFO (opening that for writing would block for ever).
                let file = fs::File::options().write(true).create_new(true).open(&path);
                file.is_ok_and(|mut file| {
                    let _ = file.write_all(&body);
                    let t = if time >= 0 {
                        UNIX_EPOCH.checked_add(Duration::from_secs(time.unsigned_abs()))
                    } else {
                        UNIX_EPOCH.checked_sub(Duration::from_secs(time.unsigned_abs()))
                    };
                    // Times the filesystem cannot hold are simply not set.
                    if let Some(t) = t {
                        let _ = file.set_modified(t);
                    }
                    true
                })
            }
            3 => {
                let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok();
                c.is_some_and(|c| {
                    rustix::fs::mknodat(
                        rustix::fs::CWD,
                        c.as_c_str(),
                        rustix::fs::FileType::Fifo,
                        rustix::fs::Mode::from_raw_mode(0o644),
                        0,
                    )
                    .is_ok()
                })
            }
            _ => {
                let depth = parent
                    .split(|&b| b == b'/')
                    .filter(|s| !s.is_empty())
                    .count();
                let up = b"../".repeat(depth);
                let to: Vec<u8> = match script.byte().unwrap_or(0) % 7 {
                    0 => [&up[..], b"../outside/secret"].concat(),
                    1 => [&up[..], b"../outside/dir"].concat(),
                    2 => base()
                        .join("outside/secret")
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                    3 => b"missing".to_vec(),
                    4 => rel.rsplit(|&b| b == b'/').next().unwrap_or(b"x").to_vec(), // itself
                    5 => b"/proc/self/root/etc/hostname".to_vec(),
                    _ if all.is_empty() => b".".to_vec(),
                    _ => {
                        let i = usize::from(script.byte().unwrap_or(0)) % all.len();
                        [&up[..], &all[i][..]].concat()
                    }
                };
                std::os::unix::fs::symlink(OsStr::from_bytes(&to), &path).is_ok()
            }
        };
        if made {
            all.push(rel);
        }
    }
    all
}

/// Serves `target` as a request would, and checks what comes back; returns the listing's
/// links if it was a listing.
fn serve(
    files: &StaticFiles,
    cache: &mut FileCache,
    target: &str,
    follow: bool,
    now: Instant,
) -> Vec<String> {
    match files.open(target, &[Coding::Brotli, Coding::Gzip]) {
        Ok(Resolved::File(found)) => {
            assert!(found.meta.is_file(), "{target}: not a regular file");
            let v = Validators::of(&found.meta);
            let _ = v.last_modified();
            let mut body = Vec::new();
            let mut file = &found.file;
            let _ = file.read_to_end(&mut body);
            if !follow {
                assert!(body != SECRET, "{target}: served the file outside the root");
            }
            if found.coding.is_none() && !found.vary && cache.accepts(found.meta.len()) {
                let key = target.to_string();
                let entry = CachedFile::new(&found.meta, body, found.content_type.clone(), now);
                let _ = cache.insert(key, entry, &found.file);
                // Nothing changed: the entry must survive its revalidation.
                let later = now + Duration::from_secs(2);
                assert!(
                    cache.get(target, files, later).is_some(),
                    "{target}: cache entry not revalidated"
                );
            }
            Vec::new()
        }
        Ok(Resolved::Directory(listing)) => {
            let Ok(html) = cache.listing(target, &listing, readyserve::files::listing::render) else {
                return Vec::new();
            };
            let html = String::from_utf8_lossy(&html).into_owned();
            let links: Vec<String> = html
                .split("href=\"")
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .map(str::to_string)
                .collect();
            for link in &links {
                assert!(
                    link.starts_with("./") || link == "../",
                    "{target}: link {link:?}"
                );
                assert!(
                    link.bytes().all(|b| b.is_ascii_graphic()),
                    "{target}: link {link:?}"
                );
            }
            links
        }
        Ok(Resolved::Redirect(to)) => {
            assert!(
                to.starts_with('/') && !to.starts_with("//"),
                "{target}: redirect {to}"
            );
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut script = Script::new(data);
    let follow = script.byte().unwrap_or(0) & 1 == 1;
    let root = base().join("root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir(&root).expect("fuzz root");
    let entries = build(&mut script, &root);
    let options = Options {
        list_directories: true,
        follow_symlinks: follow,
        ..Options::default()
    };
    let files = StaticFiles::with_options(&root, options).expect("fuzz root");
    let mut cache = FileCache::new(1 << 20);
    let now = Instant::now();
    let mut targets: Vec<String> = vec!["/".to_string()];
    for rel in &entries {
        let url = url_of(rel);
        targets.push(url.clone());
        targets.push(format!("{url}/"));
    }
    for target in &targets {
        for link in serve(&files, &mut cache, target, follow, now) {
            if link == "../" || !target.ends_with('/') {
                continue;
            }
            let followed = format!("{target}{}", &link[2..]);
            // A listed entry can be served: a file, or a directory (index or listing).
            let ok = matches!(
                files.open(&followed, &[]),
                Ok(Resolved::File(_) | Resolved::Directory(_))
            );
            assert!(ok, "{followed}: listed but not served");
            serve(&files, &mut cache, &followed, follow, now);
        }
    }
});
