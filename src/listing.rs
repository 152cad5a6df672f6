//! Directory listings, produced only with `--list-directories`.
//!
//! File names are the one part of the page a stranger controls (anyone who can create a file
//! in the root), so every name is HTML-escaped in text and percent-encoded in links.
//! Dotfiles are left out, as they are 404 by default anyway.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use crate::static_files::encode_segment;

/// One row of the listing.
struct Row {
    name: String,
    is_dir: bool,
    size: u64,
    modified: Option<std::time::SystemTime>,
}

/// Renders the listing of `dir`, whose URL path is `url_path` (ending in `/`).
pub fn render(dir: &Path, url_path: &str, show_dotfiles: bool) -> io::Result<String> {
    let mut rows = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && !show_dotfiles {
            continue;
        }
        // metadata() follows symlinks, as serving does; a dangling link is skipped.
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue;
        };
        rows.push(Row {
            name,
            is_dir: meta.is_dir(),
            size: meta.len(),
            modified: meta.modified().ok(),
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));

    let title = escape_html(url_path);
    let mut html = String::with_capacity(512 + rows.len() * 160);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<table>\n\
         <tr><th>Name</th><th>Size</th><th>Last modified</th></tr>\n"
    );
    if url_path != "/" {
        html.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for row in &rows {
        let slash = if row.is_dir { "/" } else { "" };
        let size = if row.is_dir {
            "-".to_string()
        } else {
            row.size.to_string()
        };
        let modified = row
            .modified
            .map(httpdate::fmt_http_date)
            .unwrap_or_default();
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{href}{slash}\">{text}{slash}</a></td><td>{size}</td><td>{modified}</td></tr>",
            href = escape_html(&encode_segment(&row.name)),
            text = escape_html(&row.name),
        );
    }
    html.push_str("</table>\n</body></html>\n");
    Ok(html)
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
        assert_eq!(encode_segment("a b&<\"#?.txt"), "a%20b&%3C%22%23%3F.txt");
    }
}
