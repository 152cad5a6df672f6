//! From a parsed request to a queued response: handler, file, redirect, listing or error.
//!
//! [`answer`] is called by the connection in its Parsing state with one complete request.
//! It appends the whole response head, and the body if it is small, to the connection's
//! output queue ([`OutBuf`]). A body already in memory and shared (a cached file, a listing
//! page) is queued by reference, not copied; a large file body is handed back as a
//! [`FileBody`] to be streamed.
//!
//! For files it applies RFC 9110 in this order: conditional requests (section 13.2.2:
//! If-None-Match, else If-Modified-Since → 304), then Range (section 14, made conditional
//! by If-Range) → 206 or 416, else 200.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Instant;

use crate::access_log::Entry;
use crate::buffers::OutBuf;
use crate::cache::CachedFile;
use crate::conditional::{self, Condition, Validators};
use crate::connection::Context;
use crate::encoding::{self, Coding};
use crate::error::HttpError;
use crate::handler::{Handler, Reply};
use crate::range::{self, RangeRequest};
use crate::request::{Method, Request, Version};
use crate::response::{self, DateCache};
use crate::static_files::{FoundFile, Resolved};

/// Files (or ranges) up to this size go into the output buffer with their head; larger
/// ones are streamed.
pub const INLINE_FILE_MAX: u64 = 64 * 1024;

/// A large file body, positioned at its first byte, still to be sent.
#[derive(Debug)]
pub struct FileBody {
    /// The open file, its offset at the next byte to send.
    pub file: File,
    /// Bytes still to send.
    pub remaining: u64,
    /// Try sendfile(2) first (cleared when the transport or the file cannot do it).
    pub sendfile: bool,
}

/// The result of answering one request.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The status code sent.
    pub status: u16,
    /// Body bytes sent (or to be sent).
    pub body_bytes: u64,
    /// The connection must close after this response.
    pub close: bool,
}

/// Queues the response to `req` into `out` (and `file_slot`, for a large body).
pub fn answer(
    req: &Request<'_>,
    out: &mut OutBuf,
    file_slot: &mut Option<FileBody>,
    ctx: &mut Context<'_>,
) -> Outcome {
    // `Expect: 100-continue`: we answer without reading the body (RFC 9110 section 10.1.1),
    // and then the body's bytes are still on the way, so the connection cannot be reused.
    let keep_alive = req.keep_alive && !ctx.shutting_down && !req.expects_continue;
    let head_only = req.method == Method::Head;
    if let Some(handler) = ctx.handler.as_mut() {
        match call_handler(&mut **handler, req) {
            Ok(Some(reply)) => {
                return write_reply(out, &reply, req.version, head_only, keep_alive, ctx.date);
            }
            Ok(None) => {}
            Err(()) => {
                return write_error_outcome(out, HttpError::Internal, req, keep_alive, ctx);
            }
        }
    }
    if req.method == Method::Options {
        // RFC 9110 section 9.3.7. 204 carries no Content-Length (section 8.6).
        let head = out.owned();
        response::begin(head, 204, "No Content", ctx.date);
        response::header(head, "Allow", "GET, HEAD, OPTIONS");
        response::end(head, None, req.version, keep_alive);
        return Outcome {
            status: 204,
            body_bytes: 0,
            close: !keep_alive,
        };
    }
    // The fast path: a small file already in memory costs no syscall at all.
    let page = Page {
        date: ctx.date,
        cache_control: ctx.files.options().cache_control.as_deref(),
    };
    if let Some(entry) = ctx.cache.get(cache_key(req.target), ctx.files, ctx.now) {
        return serve_cached(req, entry, out, &page, keep_alive);
    }
    let codings = encoding::preferred(req.accept_encoding);
    match ctx.files.open(req.target, &codings) {
        Ok(Resolved::File(found)) => serve_file(req, *found, out, file_slot, ctx, keep_alive),
        Ok(Resolved::Redirect(location)) => {
            let body = response::error_page(301, "Moved Permanently");
            let head = out.owned();
            response::begin(head, 301, "Moved Permanently", ctx.date);
            response::header(head, "Location", &location);
            response::header(head, "Content-Type", "text/html; charset=utf-8");
            response::end(head, Some(body.len() as u64), req.version, keep_alive);
            send_body(out, body.as_bytes(), head_only, 301, keep_alive)
        }
        Ok(Resolved::Listing(listing)) => {
            // Rendered once, then kept until inotify reports a change (see listing.rs). A
            // listing can be large (a directory of thousands of files): it is queued as a
            // shared body, counted against the connection's high-water mark like a cached
            // file, rather than copied in beside the heads.
            let html = match ctx.cache.listing(cache_key(req.target), &listing) {
                Ok(html) => html,
                Err(e) => {
                    log::warn!("{}: cannot list the directory: {e}", req.target);
                    return write_error_outcome(out, HttpError::Internal, req, keep_alive, ctx);
                }
            };
            let len = html.len();
            let head = out.owned();
            response::begin(head, 200, "OK", ctx.date);
            response::header(head, "Content-Type", "text/html; charset=utf-8");
            response::end(head, Some(len as u64), req.version, keep_alive);
            if !head_only {
                out.push_body(&html, 0, len);
            }
            Outcome {
                status: 200,
                body_bytes: if head_only { 0 } else { len as u64 },
                close: !keep_alive,
            }
        }
        Err(e) => {
            let keep_alive = keep_alive && !e.closes_connection();
            let body_bytes = write_error(out, e, req.version, head_only, keep_alive, ctx.date);
            Outcome {
                status: e.status().0,
                body_bytes,
                close: !keep_alive,
            }
        }
    }
}

/// Appends a small body (copied), unless the request was HEAD.
fn send_body(
    out: &mut OutBuf,
    body: &[u8],
    head_only: bool,
    status: u16,
    keep_alive: bool,
) -> Outcome {
    if !head_only {
        out.extend_from_slice(body);
    }
    Outcome {
        status,
        body_bytes: if head_only { 0 } else { body.len() as u64 },
        close: !keep_alive,
    }
}

/// What the response head of a file needs to know, wherever the bytes come from.
struct FileView<'a> {
    len: u64,
    content_type: &'a str,
    validators: &'a Validators,
    /// `None` when the file's time has no HTTP date (before 1970 or after 9999).
    last_modified: Option<&'a str>,
    coding: Option<Coding>,
    vary: bool,
}

/// What every file response takes from the server's settings.
struct Page<'a> {
    date: &'a DateCache,
    cache_control: Option<&'a str>,
}

/// Where a file's bytes come from.
enum Source<'a> {
    /// The cache holds them, shared.
    Memory(&'a Rc<[u8]>),
    /// The open file.
    Disk(File),
}

/// The response for a regular file: 304, 206, 416 or 200.
fn serve_file(
    req: &Request<'_>,
    found: FoundFile,
    out: &mut OutBuf,
    file_slot: &mut Option<FileBody>,
    ctx: &mut Context<'_>,
    keep_alive: bool,
) -> Outcome {
    let FoundFile {
        mut file,
        meta,
        content_type,
        coding,
        vary,
        canonical,
    } = found;
    let len = meta.len();
    // Small plain files go into the cache, and are served from it from now on: under the
    // one canonical spelling of their path, so that other spellings cannot fill it.
    if coding.is_none() && !vary && canonical && ctx.cache.accepts(len) {
        let mut body = Vec::with_capacity(len as usize);
        match (&mut file).take(len).read_to_end(&mut body) {
            Ok(n) if n as u64 == len => {
                let key = cache_key(req.target).to_string();
                let entry = CachedFile::new(&meta, body, content_type.clone(), ctx.now);
                ctx.cache.insert(key, entry, &file);
                let page = Page {
                    date: ctx.date,
                    cache_control: ctx.files.options().cache_control.as_deref(),
                };
                if let Some(entry) = ctx.cache.get(cache_key(req.target), ctx.files, ctx.now) {
                    return serve_cached(req, entry, out, &page, keep_alive);
                }
                // The file does not fit the cache after all: read it again from disk.
                if let Err(e) = file.seek(SeekFrom::Start(0)) {
                    log::warn!("{}: seek failed: {e}", req.target);
                    return write_error_outcome(out, HttpError::Internal, req, keep_alive, ctx);
                }
            }
            _ => {
                log::warn!("{}: file changed while being read", req.target);
                return write_error_outcome(out, HttpError::Internal, req, keep_alive, ctx);
            }
        }
    }
    let validators = Validators::of(&meta);
    let last_modified = validators.last_modified();
    let view = FileView {
        len,
        content_type: &content_type,
        validators: &validators,
        last_modified: last_modified.as_deref(),
        coding,
        vary,
    };
    let page = Page {
        date: ctx.date,
        cache_control: ctx.files.options().cache_control.as_deref(),
    };
    respond_with_file(
        req,
        &view,
        Source::Disk(file),
        out,
        file_slot,
        &page,
        keep_alive,
    )
}

/// The response for a cached file.
fn serve_cached(
    req: &Request<'_>,
    entry: &CachedFile,
    out: &mut OutBuf,
    page: &Page<'_>,
    keep_alive: bool,
) -> Outcome {
    let view = FileView {
        len: entry.body.len() as u64,
        content_type: &entry.content_type,
        validators: &entry.validators,
        last_modified: entry.last_modified.as_deref(),
        coding: None,
        vary: false,
    };
    let mut no_file = None;
    respond_with_file(
        req,
        &view,
        Source::Memory(&entry.body),
        out,
        &mut no_file,
        page,
        keep_alive,
    )
}

/// The cache key for a target: its path, as sent, without query or fragment.
fn cache_key(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or(target)
}

fn write_error_outcome(
    out: &mut OutBuf,
    e: HttpError,
    req: &Request<'_>,
    keep_alive: bool,
    ctx: &Context<'_>,
) -> Outcome {
    let keep_alive = keep_alive && !e.closes_connection();
    let head_only = req.method == Method::Head;
    let body_bytes = write_error(out, e, req.version, head_only, keep_alive, ctx.date);
    Outcome {
        status: e.status().0,
        body_bytes,
        close: !keep_alive,
    }
}

/// Conditionals, then Range, then the head and the body (RFC 9110 sections 13.2.2, 14).
fn respond_with_file(
    req: &Request<'_>,
    view: &FileView<'_>,
    source: Source<'_>,
    out: &mut OutBuf,
    file_slot: &mut Option<FileBody>,
    page: &Page<'_>,
    keep_alive: bool,
) -> Outcome {
    let head_only = req.method == Method::Head;
    let len = view.len;
    let cache_control = page.cache_control;
    let date = page.date;
    // The headers every variant of this response shares.
    let common = |out: &mut Vec<u8>| {
        response::header(out, "ETag", &view.validators.etag);
        if let Some(date) = view.last_modified {
            response::header(out, "Last-Modified", date);
        }
        if view.vary {
            response::header(out, "Vary", "Accept-Encoding");
        }
        if let Some(value) = cache_control {
            response::header(out, "Cache-Control", value);
        }
    };

    if conditional::evaluate(view.validators, req.if_none_match, req.if_modified_since)
        == Condition::NotModified
    {
        let head = out.owned();
        response::begin(head, 304, "Not Modified", date);
        common(head);
        response::end(head, None, req.version, keep_alive);
        return Outcome {
            status: 304,
            body_bytes: 0,
            close: !keep_alive,
        };
    }

    let wanted = match req.range {
        Some(range) if conditional::if_range_allows(view.validators, req.if_range) => {
            range::evaluate(range, len)
        }
        _ => RangeRequest::Full,
    };
    let (status, start, count) = match wanted {
        RangeRequest::Full => (200, 0, len),
        RangeRequest::Partial { start, end } => (206, start, end - start + 1),
        RangeRequest::Unsatisfiable => {
            let (code, reason) = (416, "Range Not Satisfiable");
            let body = response::error_page(code, reason);
            let head = out.owned();
            response::begin(head, code, reason, date);
            response::header(head, "Content-Range", &format!("bytes */{len}"));
            response::header(head, "Content-Type", "text/html; charset=utf-8");
            response::end(head, Some(body.len() as u64), req.version, keep_alive);
            return send_body(out, body.as_bytes(), head_only, code, keep_alive);
        }
    };

    let head = out.owned();
    if status == 206 {
        response::begin(head, 206, "Partial Content", date);
        let end = start + count - 1;
        response::header(head, "Content-Range", &format!("bytes {start}-{end}/{len}"));
    } else {
        response::begin(head, 200, "OK", date);
        response::header(head, "Accept-Ranges", "bytes");
    }
    response::header(head, "Content-Type", view.content_type);
    if let Some(coding) = view.coding {
        response::header(head, "Content-Encoding", coding.token());
    }
    response::header(head, "X-Content-Type-Options", "nosniff");
    common(head);
    response::end(head, Some(count), req.version, keep_alive);

    let mut outcome = Outcome {
        status,
        body_bytes: if head_only { 0 } else { count },
        close: !keep_alive,
    };
    if head_only || count == 0 {
        return outcome;
    }
    let mut file = match source {
        Source::Memory(bytes) => {
            // Referred to, not copied (unless it is tiny). `start..start + count` lies
            // within the body: `range::evaluate` saw its length.
            out.push_body(bytes, start as usize, (start + count) as usize);
            return outcome;
        }
        Source::Disk(file) => file,
    };
    if start > 0
        && let Err(e) = file.seek(SeekFrom::Start(start))
    {
        log::warn!("{}: seek failed: {e}; closing", req.target);
        outcome.close = true;
        return outcome;
    }
    if count <= INLINE_FILE_MAX {
        // Copied in, beside the head: it is small, and the connection stops answering while
        // its queue is over the high-water mark, so at most one such body sits above it.
        // Room for the whole body first, so that it arrives in one read(2).
        let owned = out.owned();
        owned.reserve(count as usize);
        match (&mut file).take(count).read_to_end(owned) {
            Ok(n) if n as u64 == count => {}
            Ok(_) | Err(_) => {
                // The head promised `count` bytes; fewer follow, so the client can only
                // learn of it when the connection closes.
                log::warn!("{}: file changed while being read; closing", req.target);
                outcome.close = true;
            }
        }
    } else {
        *file_slot = Some(FileBody {
            file,
            remaining: count,
            sendfile: true,
        });
    }
    outcome
}

/// The answer on the metrics listener: the counters at `/metrics`, 404 elsewhere.
pub fn answer_metrics(req: &Request<'_>, out: &mut OutBuf, ctx: &mut Context<'_>) -> Outcome {
    let keep_alive = req.keep_alive && !ctx.shutting_down;
    let path = cache_key(req.target);
    let Some(metrics) = ctx.metrics.as_deref() else {
        return write_error_outcome(out, HttpError::NotFound, req, keep_alive, ctx);
    };
    if path != "/metrics" || req.method == Method::Options {
        return write_error_outcome(out, HttpError::NotFound, req, keep_alive, ctx);
    }
    let body = metrics.render(ctx.open_connections);
    let reply = Reply::new(200, "text/plain; version=0.0.4; charset=utf-8", body);
    let head_only = req.method == Method::Head;
    write_reply(out, &reply, req.version, head_only, keep_alive, ctx.date)
}

/// Asks the handler, and turns a panic in it into `Err(())`: the server answers 500 and
/// goes on serving everyone else (the release profile keeps `panic = "unwind"` for this).
///
/// `AssertUnwindSafe` is sound enough here: the closure touches nothing of the server's,
/// only the handler and the request, which it borrows read-only. The server's own state
/// (this connection's buffers, the cache, the loop) is not in the middle of a change while
/// the handler runs, so it is consistent after the unwind. The handler's own state may not
/// be, and it will be asked again for later requests: that is logged at error, for its
/// author to look at.
fn call_handler(handler: &mut dyn Handler, req: &Request<'_>) -> Result<Option<Reply>, ()> {
    panic::catch_unwind(AssertUnwindSafe(|| handler.handle(req))).map_err(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        log::error!(
            "handler panicked on {}: {what}; answering 500 (the handler's own state may be \
             inconsistent from now on)",
            req.target
        );
    })
}

/// Headers the server alone writes: they frame the message (RFC 9112 section 6) or are
/// the server's to state (RFC 9110 sections 6.6.1, 10.2.4). A handler's value beside ours
/// would make the response ambiguous, and a proxy would reject or misread it.
const SERVER_OWNED: [&str; 5] = [
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Date",
    "Server",
];

/// Writes a handler's reply.
fn write_reply(
    out: &mut OutBuf,
    reply: &Reply,
    version: Version,
    head_only: bool,
    keep_alive: bool,
    date: &DateCache,
) -> Outcome {
    let status = if (200..1000).contains(&reply.status) {
        reply.status
    } else {
        log::error!("handler returned status {}; sending 500", reply.status);
        500
    };
    let head = out.owned();
    response::begin(head, status, response::reason(status), date);
    response::header(head, "Content-Type", &reply.content_type);
    for (name, value) in &reply.headers {
        let splits = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
        if splits(name) || splits(value) || name.is_empty() {
            log::error!("handler header {name:?} dropped: CR or LF would split the response");
            continue;
        }
        if SERVER_OWNED
            .iter()
            .any(|own| own.eq_ignore_ascii_case(name.trim()))
        {
            log::warn!("handler header {name:?} dropped: the server alone sets it");
            continue;
        }
        response::header(head, name, value);
    }
    // 204 and 304 have no body and no Content-Length (RFC 9110 sections 8.6, 15.3.5).
    let bodiless = status == 204 || status == 304;
    let len = reply.body.len() as u64;
    response::end(head, (!bodiless).then_some(len), version, keep_alive);
    send_body(out, &reply.body, head_only || bodiless, status, keep_alive)
}

/// Writes a complete error response; returns the body length sent.
pub fn write_error(
    out: &mut OutBuf,
    e: HttpError,
    version: Version,
    head_only: bool,
    keep_alive: bool,
    date: &DateCache,
) -> u64 {
    let (code, reason) = e.status();
    let body = response::error_page(code, reason);
    let head = out.owned();
    response::begin(head, code, reason, date);
    if e == HttpError::MethodNotAllowed {
        response::header(head, "Allow", "GET, HEAD, OPTIONS");
    }
    response::header(head, "Content-Type", "text/html; charset=utf-8");
    response::end(head, Some(body.len() as u64), version, keep_alive);
    if head_only {
        return 0;
    }
    head.extend_from_slice(body.as_bytes());
    body.len() as u64
}

/// Writes the access-log line for one answered request.
pub fn log_request(
    ctx: &mut Context<'_>,
    peer: Option<std::net::SocketAddr>,
    req: &Request<'_>,
    outcome: &Outcome,
    started: Instant,
) {
    let micros = Instant::now()
        .saturating_duration_since(started)
        .as_micros();
    let header = ctx.real_ip_header;
    let client =
        crate::proxy::client_addr(peer, header, req.headers_named(header.name()), ctx.trusted);
    let entry = Entry {
        peer: client,
        peer_is_unix: peer.is_none() && client.is_none(),
        request_line: req.request_line(),
        status: outcome.status,
        body_bytes: outcome.body_bytes,
        referer: req.referer,
        user_agent: req.user_agent,
        micros: u64::try_from(micros).unwrap_or(u64::MAX),
    };
    ctx.access_log.log(&entry, ctx.wall);
}
