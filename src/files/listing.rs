//! Directory listings, produced only with `--list-directories`.
//!
//! File names are the one part of the page a stranger controls (anyone who can create a file
//! in the root), so they are treated as hostile bytes, not as text:
//!
//! - The link is built from the name's raw bytes: every byte outside RFC 3986's
//!   `unreserved` set (section 2.3) is percent-encoded, and the link starts with `./`. So a
//!   file called `javascript:alert(1)` links to `./javascript%3Aalert%281%29`, never to a
//!   scheme, and a name that is not UTF-8 still links to itself (the server decodes the
//!   percent-encoding back to the same bytes).
//! - The text shown is the name decoded as UTF-8 (invalid bytes shown as U+FFFD) and
//!   HTML-escaped.
//!
//! Dotfiles are left out, as they are 404 by default anyway, and so are entries that could
//! not be served: names with a backslash, FIFOs, sockets, devices, and symlinks that dangle
//! or lead outside the root.
//!
//! # Cost on the loop thread
//!
//! Rendering stats every entry, on the one thread that serves everyone: 30,000 entries took
//! tens of milliseconds in which no other client was answered. Two things bound that:
//!
//! - The rendered page is cached ([`crate::files::cache::FileCache::listing`]) and dropped when
//!   inotify reports a change in the directory, so a listing fetched in a loop is rendered
//!   once, not once per request.
//! - At most `--max-listing-entries` entries are read (default
//!   [`crate::files::static_files::DEFAULT_MAX_LISTING_ENTRIES`]); a longer directory gets a page
//!   that says it was cut short. That bounds the cost of the render the cache cannot avoid
//!   (the first one, and one after each change). A page also stops at [`MAX_PAGE_BYTES`]:
//!   a client that never reads holds its whole page, so its size is what one such client
//!   can cost when the page is not shared through the cache.
//!
//! Rendering across loop turns would avoid even that pause, at the price of a resumable
//! renderer holding a directory stream per connection; the cap makes it unnecessary.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType};

use crate::files::static_files::{Directory, LOOKUP_ONLY, open_beneath};
use crate::http::conditional::http_date;

/// A page stops growing past this many bytes, whatever `--max-listing-entries` allows. A
/// page is one body that a client which never reads holds in full (shared when it comes
/// from the cache, its own when the cache is off or too small), and names of 255 bytes,
/// escaped and percent-encoded, make rows of over 2 KB: 10,000 of them would be 23 MB.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// One row of the listing.
struct Row {
    name: Vec<u8>,
    is_dir: bool,
    size: u64,
    mtime: i64,
}

/// Renders the page for `dir`: one row per entry that could be served, sorted by name.
pub fn render(dir: &Directory) -> io::Result<Vec<u8>> {
    Lister(dir).render()
}

/// A directory being rendered; it reads the directory's fields through `Deref`.
struct Lister<'a>(&'a Directory);

impl std::ops::Deref for Lister<'_> {
    type Target = Directory;
    fn deref(&self) -> &Directory {
        self.0
    }
}

impl Lister<'_> {
    /// Renders the page.
    pub fn render(&self) -> io::Result<Vec<u8>> {
        // A second descriptor with its own position, so that this one stays untouched.
        let mut dir = rustix::fs::Dir::read_from(&self.dir)?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut truncated = false;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            // Names the server would refuse to serve are not listed: dotfiles (unless
            // served), and names with a backslash (see `map_target`).
            if name == b"."
                || name == b".."
                || (name[0] == b'.' && !self.show_dotfiles)
                || name.contains(&b'\\')
            {
                continue;
            }
            if names.len() == self.max_entries {
                truncated = true;
                break;
            }
            names.push(name.to_vec());
        }
        names.sort_unstable();
        let rows: Vec<Row> = names.into_iter().filter_map(|n| self.row(n)).collect();
        Ok(self.html(&rows, truncated).into_bytes())
    }

    /// The row for the entry `name`, or `None` if it cannot be served.
    fn row(&self, name: Vec<u8>) -> Option<Row> {
        let cname = std::ffi::CString::new(name.clone()).ok()?;
        let mut st =
            rustix::fs::statat(&self.dir, cname.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            st = self.follow(&cname)?;
        }
        let is_dir = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => true,
            FileType::RegularFile => false,
            _ => return None,
        };
        Some(Row {
            name,
            is_dir,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: st.st_mtime as i64,
        })
    }

    /// What the symlink `name` leads to, resolved from the root exactly as serving it would.
    fn follow(&self, name: &CStr) -> Option<rustix::fs::Stat> {
        let rel = self.rel.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let flags = LOOKUP_ONLY;
        let fd = open_beneath(self.root.as_fd(), &rel, flags, self.follow_symlinks).ok()?;
        rustix::fs::fstat(File::from(fd)).ok()
    }

    fn html(&self, rows: &[Row], truncated: bool) -> String {
        let mut table = String::with_capacity(256 + rows.len() * 200);
        table.push_str("<table>\n<tr><th>Name</th><th>Size</th><th>Last modified</th></tr>\n");
        if self.url_path != "/" {
            table.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
        }
        let mut listed = 0;
        for row in rows {
            if table.len() >= MAX_PAGE_BYTES {
                break; // long names: the byte bound comes before the entry bound
            }
            listed += 1;
            let slash = if row.is_dir { "/" } else { "" };
            let size = if row.is_dir {
                "-".to_string()
            } else {
                row.size.to_string()
            };
            // A time no HTTP date can express (before 1970, after 9999) is left blank.
            let modified = http_date(row.mtime).unwrap_or_default();
            let _ = writeln!(
                table,
                "<tr><td><a href=\"{href}{slash}\">{text}{slash}</a></td><td>{size}</td><td>{modified}</td></tr>",
                href = href(&row.name),
                text = escape_html(&String::from_utf8_lossy(&row.name)),
            );
        }
        table.push_str("</table>\n</body></html>\n");

        let title = escape_html(&self.url_path);
        let mut html = String::with_capacity(512 + table.len());
        let _ = write!(
            html,
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
             <body><h1>Index of {title}</h1>\n"
        );
        if truncated || listed < rows.len() {
            let _ = writeln!(
                html,
                "<p><strong>This directory has more entries than a listing shows; only the \
                 first {listed} found are listed.</strong></p>"
            );
        }
        html.push_str(&table);
        html
    }
}

/// The link to an entry called `name` (raw bytes): `./` and then every byte outside RFC
/// 3986's `unreserved` (`A-Z a-z 0-9 - . _ ~`) percent-encoded. The result is plain ASCII
/// with nothing to escape in HTML, no scheme, no `/` and no `?` or `#`.
pub fn href(name: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(2 + name.len() * 3);
    out.push_str("./");
    for &b in name {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape_html("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
    }

    #[test]
    fn hrefs_encode_every_byte_outside_unreserved() {
        assert_eq!(href(b"javascript:alert(1)"), "./javascript%3Aalert%281%29");
        assert_eq!(href(b"a b&<\"#?.txt"), "./a%20b%26%3C%22%23%3F.txt");
        assert_eq!(href(b"Az09-._~"), "./Az09-._~");
        assert_eq!(href(b"\xff\xfe/x"), "./%FF%FE%2Fx");
        // Every href decodes back to the name's bytes.
        let all: Vec<u8> = (1..=255).collect();
        let link = href(&all);
        assert!(link.bytes().all(|b| b.is_ascii_graphic()));
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(&link[2..]).collect();
        assert_eq!(decoded, all);
    }
}
