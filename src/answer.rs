//! From a parsed request to a queued response: handler, file, redirect, listing or error.
//!
//! [`answer`] is called by the connection in its Parsing state with one complete request
//! (and its body, if a handler took it: [`body_limit`] asks before the body is read).
//! It appends the whole response head, and the body if it is small, to the connection's
//! output queue ([`OutBuf`]); or, when a handler answers later or streams, it hands the
//! connection what to wait for ([`Call::later`]). A body already in memory and shared (a cached file, a listing
//! page) is queued by reference, not copied; a large file body is handed back as a
//! [`FileBody`] to be streamed.
//!
//! Every response is built the same way, by one `respond(status, headers, body)`, and
//! whether the connection stays open after it is decided in one place, [`keep_alive`].
//!
//! For files it applies RFC 9110 in this order: conditional requests (section 13.2.2:
//! If-Match, else If-Unmodified-Since → 412; If-None-Match, else If-Modified-Since → 304),
//! then Range (section 14, made conditional by If-Range) → 206 or 416, else 200.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::buffers::OutBuf;
use crate::context::Context;
use crate::deferred::{self, Later};
use crate::files::cache::CachedFile;
use crate::files::listing;
use crate::files::static_files::{self, FoundFile, Resolved};
use crate::handler::{Answer, Exchange, Reply};
use crate::http::conditional::{self, Condition, Validators};
use crate::http::encoding::{self, Coding};
use crate::http::error::HttpError;
use crate::http::range::{self, RangeRequest};
use crate::http::request::{BodyLength, Method, Request, Version};
use crate::http::response::{self, DateCache};
use crate::ops::access_log::Entry;
use crate::ops::live;

/// Files (or ranges) up to this size go into the output buffer with their head; larger
/// ones are streamed.
pub const INLINE_FILE_MAX: u64 = 64 * 1024;

/// A large file body, positioned at its first byte, still to be sent.
#[derive(Debug)]
pub struct FileBody {
    /// The open file, its offset at the next byte to send.
    pub file: File,
    /// The body's length, and the bytes of it still to send.
    pub length: u64,
    pub remaining: u64,
    /// Try sendfile(2) first (cleared when the transport or the file cannot do it).
    pub sendfile: bool,
    /// How many sendfile(2) calls for this body stopped short (the socket full): the sign
    /// of a client that takes it slower than we send (see `listener::NOTSENT_LOWAT_SLOW_READER`).
    pub short_sends: u32,
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

/// Whether the connection stays open after the response to `req`: the one place that
/// decides it, for every kind of response. It closes when
///
/// 1. the client asked (`Connection: close`, or HTTP/1.0 without keep-alive: RFC 9112
///    section 9.3), as the request's head says;
/// 2. the server is shutting down;
/// 3. the request said `Expect: 100-continue` and is answered without its body (RFC 9110
///    section 10.1.1), whose bytes may still be on their way, so the next request cannot be
///    told apart from them (a body a handler took was read after `100 Continue`, and the
///    connection clears the flag);
/// 4. the response is an error that leaves the framing in doubt
///    ([`HttpError::closes_connection`]).
///
/// A request whose head could not be parsed has no framing at all, and always closes (see
/// [`write_error`]).
pub fn keep_alive(req: &Request<'_>, shutting_down: bool, error: Option<HttpError>) -> bool {
    req.keep_alive
        && !shutting_down
        && !req.expects_continue
        && !error.is_some_and(|e| e.closes_connection())
}

/// What the connection lends [`answer`] for the handler, and gets back from it.
#[derive(Debug)]
pub struct Call<'c> {
    /// The request's body, if the handler took it ([`body_limit`]); else empty.
    pub body: &'c [u8],
    /// The connection's peer: the same address the access log starts from.
    pub peer: Option<std::net::SocketAddr>,
    /// The connection's slab key, which answers from other threads are addressed to.
    pub key: usize,
    /// Set when the handler answers later (nothing was queued) or streams (the head was
    /// queued): what the connection waits for.
    pub later: Option<Later>,
}

/// Whether the handler takes the body of `req`, asked before any of it is read: `Ok(None)`
/// if not (or there is no handler), else the most bytes it takes, within `--max-body-bytes`.
/// `Err` is the answer instead: 413 for a `Content-Length` over the handler's limit, 500
/// for a handler that panicked.
pub fn body_limit(req: &Request<'_>, ctx: &mut Context<'_>) -> Result<Option<u64>, HttpError> {
    let Some(handler) = ctx.handler.as_mut() else {
        return Ok(None);
    };
    let asked = catch(req, || handler.accepts_body(req)).map_err(|()| HttpError::Internal)?;
    let Some(limit) = asked.map(|limit| limit.min(ctx.limits.max_body)) else {
        return Ok(None);
    };
    match req.body {
        BodyLength::Length(len) if len > limit => Err(HttpError::BodyTooLarge),
        _ => Ok(Some(limit)),
    }
}

/// Queues the response to `req` into `out` (and `file_slot`, for a large body). `None`
/// when a handler answers later: nothing is queued, and `call.later` says what to wait for.
pub fn answer(
    req: &Request<'_>,
    out: &mut OutBuf,
    file_slot: &mut Option<FileBody>,
    ctx: &mut Context<'_>,
    call: &mut Call<'_>,
) -> Option<Outcome> {
    // Health checks first: they must not depend on the handler or the files.
    if is_health_check(req, ctx.health_path) {
        return Some(answer_health(req, out, ctx));
    }
    let frame = Frame::of(req, ctx, None);
    if let Some(handler) = ctx.handler.as_mut() {
        let mut exchange = Exchange::new(
            req,
            call.body,
            call.peer,
            ctx.trusted,
            ctx.real_ip_header,
            ctx.mailbox,
            call.key,
        );
        let answered = catch(req, || handler.handle(&mut exchange));
        let later = exchange.later.take();
        match answered {
            Ok(Some(Answer::Reply(reply))) => return Some(write_reply(out, &reply, &frame)),
            Ok(Some(Answer::Later)) => match later {
                Some(later @ Later::Reply { .. }) if ctx.mailbox.is_some() => {
                    call.later = Some(later);
                    return None;
                }
                _ => log::error!(
                    "handler answered Later for {} without Exchange::defer (or outside a \
                     server); sending 500",
                    req.target
                ),
            },
            Ok(Some(Answer::Stream(head))) => match later {
                Some(Later::Stream(mut stream)) if ctx.mailbox.is_some() => {
                    // Chunked on HTTP/1.1; on 1.0 the body ends with the connection.
                    stream.chunked = req.version == Version::Http11;
                    let frame = Frame {
                        keep_alive: frame.keep_alive && stream.chunked,
                        ..frame
                    };
                    let (outcome, body) = write_stream_head(out, &head, &frame, stream.chunked);
                    if body {
                        call.later = Some(Later::Stream(stream));
                    }
                    return Some(outcome);
                }
                _ => log::error!(
                    "handler answered Stream for {} without Exchange::stream (or outside a \
                     server); sending 500",
                    req.target
                ),
            },
            // Declined: on to the files.
            Ok(None) => return answer_declined(req, out, file_slot, ctx, &frame),
            Err(()) => {}
        }
        // A panic, or a broken promise: 500, and the server goes on.
        return Some(error(out, HttpError::Internal, req, ctx));
    }
    answer_declined(req, out, file_slot, ctx, &frame)
}

/// The answer when no handler took the request: the files', for the methods they allow.
fn answer_declined(
    req: &Request<'_>,
    out: &mut OutBuf,
    file_slot: &mut Option<FileBody>,
    ctx: &mut Context<'_>,
    frame: &Frame<'_>,
) -> Option<Outcome> {
    if !req.method.is_for_files() {
        // RFC 9110 section 15.5.6: a method the files do not allow is 405, with Allow;
        // one this server does not know at all is 501 (section 15.6.2).
        let e = match req.method {
            Method::Other => HttpError::NotImplemented,
            _ => HttpError::MethodNotAllowed,
        };
        // Counted among the rejected too, as it was when the parser refused these methods
        // (its bytes are counted once, as the request's).
        if let Some(metrics) = ctx.metrics.as_deref_mut() {
            metrics.rejected(e, 0);
        }
        return Some(error(out, e, req, ctx));
    }
    Some(answer_files(req, out, file_slot, ctx, *frame))
}

/// The deferred `reply` to `req`, queued into `out` now that it has come.
pub fn answer_later(
    req: &Request<'_>,
    reply: &Reply,
    out: &mut OutBuf,
    ctx: &Context<'_>,
) -> Outcome {
    write_reply(out, reply, &Frame::of(req, ctx, None))
}

/// The static files' answer to a GET, HEAD or OPTIONS.
fn answer_files(
    req: &Request<'_>,
    out: &mut OutBuf,
    file_slot: &mut Option<FileBody>,
    ctx: &mut Context<'_>,
    frame: Frame<'_>,
) -> Outcome {
    if req.method == Method::Options {
        // RFC 9110 section 9.3.7. 204 carries no Content-Length (section 8.6).
        let allow = |head: &mut Vec<u8>| response::header(head, "Allow", "GET, HEAD, OPTIONS");
        return respond(out, None, &frame, (204, "No Content"), allow, Body::None);
    }
    // The fast path: a small file already in memory costs no syscall at all.
    let cache_control = ctx.files.options().cache_control.as_deref();
    let key = static_files::cache_key(req.path());
    if let Some(entry) = key
        .as_ref()
        .and_then(|k| ctx.cache.get(k, ctx.files, ctx.now))
    {
        return serve_cached(req, entry, out, &frame, cache_control);
    }
    let codings = encoding::preferred(req.accept_encoding);
    match ctx.files.open(req.target, &codings) {
        Ok(Resolved::File(found)) => serve_file(req, *found, key, out, file_slot, ctx),
        Ok(Resolved::Redirect(mut location)) => {
            // `/d?x=1` goes to `/d/?x=1`, as in nginx: the query is the client's, kept.
            // httparse has refused control bytes in the target, so it is safe in a header.
            if let Some(query) = req.query() {
                location.push('?');
                location.push_str(query);
            }
            let page = response::error_page(301, "Moved Permanently");
            let headers = |head: &mut Vec<u8>| {
                response::header(head, "Location", &location);
                response::header(head, "Content-Type", "text/html; charset=utf-8");
            };
            respond(
                out,
                None,
                &frame,
                (301, "Moved Permanently"),
                headers,
                Body::Copy(page.as_bytes()),
            )
        }
        Ok(Resolved::Directory(dir)) => {
            // Rendered once, then kept until inotify reports a change (see listing.rs). A
            // listing can be large (a directory of thousands of files): it is queued as a
            // shared body, counted against the connection's high-water mark like a cached
            // file, rather than copied in beside the heads.
            let key = key.as_deref().unwrap_or(dir.url_path.as_str());
            let html = match ctx.cache.listing(key, &dir, listing::render) {
                Ok(html) => html,
                Err(e) => {
                    log::warn!("{}: cannot list the directory: {e}", req.target);
                    return error(out, HttpError::Internal, req, ctx);
                }
            };
            let headers = |head: &mut Vec<u8>| {
                response::header(head, "Content-Type", "text/html; charset=utf-8")
            };
            respond(
                out,
                None,
                &frame,
                (200, "OK"),
                headers,
                Body::Shared(&html, 0, html.len()),
            )
        }
        Err(e) => error(out, e, req, ctx),
    }
}

/// How every response to one request is framed.
#[derive(Clone, Copy)]
struct Frame<'a> {
    version: Version,
    /// HEAD: the head only, with the length the body would have.
    head_only: bool,
    /// See [`keep_alive`].
    keep_alive: bool,
    date: &'a DateCache,
}

impl<'a> Frame<'a> {
    /// The framing of the response to `req`, an `error` response or not.
    fn of(req: &Request<'_>, ctx: &Context<'a>, error: Option<HttpError>) -> Self {
        Frame {
            version: req.version,
            head_only: req.method == Method::Head,
            keep_alive: keep_alive(req, ctx.shutting_down, error),
            date: ctx.date,
        }
    }
}

/// A response body, and so its `Content-Length`.
enum Body<'a> {
    /// No body and no `Content-Length` (204 and 304: RFC 9110 sections 8.6, 15.3.5).
    None,
    /// Bytes copied in after the head.
    Copy(&'a [u8]),
    /// `body[start..end]` of a shared body (a cached file, a listing), queued by reference.
    Shared(&'a Rc<[u8]>, usize, usize),
    /// `count` bytes of an open file from offset `start`: copied in if small, else streamed.
    File(File, u64, u64),
}

/// Queues one response: the status line, the server's headers, `headers`, the framing, and
/// the body (unless the request was HEAD). The one way every response is built.
fn respond(
    out: &mut OutBuf,
    file_slot: Option<&mut Option<FileBody>>,
    frame: &Frame<'_>,
    (status, reason): (u16, &str),
    headers: impl FnOnce(&mut Vec<u8>),
    body: Body<'_>,
) -> Outcome {
    let len = match &body {
        Body::None => None,
        Body::Copy(bytes) => Some(bytes.len() as u64),
        Body::Shared(_, start, end) => Some((end - start) as u64),
        Body::File(_, _, count) => Some(*count),
    };
    let head = out.owned();
    response::begin(head, status, reason, frame.date);
    headers(head);
    response::end(head, len, frame.version, frame.keep_alive);
    let mut outcome = Outcome {
        status,
        body_bytes: if frame.head_only { 0 } else { len.unwrap_or(0) },
        close: !frame.keep_alive,
    };
    if frame.head_only {
        return outcome;
    }
    match body {
        Body::None => {}
        Body::Copy(bytes) => out.extend_from_slice(bytes),
        // Referred to, not copied (unless it is tiny).
        Body::Shared(bytes, start, end) if start < end => out.push_body(bytes, start, end),
        Body::Shared(..) => {}
        Body::File(file, start, count) => {
            if !queue_file(out, file_slot, file, start, count) {
                // The head promised `count` bytes; fewer follow, so the client can only
                // learn of it when the connection closes.
                outcome.close = true;
            }
        }
    }
    outcome
}

/// Queues `count` bytes of `file` from `start`: read in beside the head when small, else
/// handed to `file_slot` to be streamed. `false` when the file failed under us.
fn queue_file(
    out: &mut OutBuf,
    file_slot: Option<&mut Option<FileBody>>,
    mut file: File,
    start: u64,
    count: u64,
) -> bool {
    if count == 0 {
        return true;
    }
    if start > 0
        && let Err(e) = file.seek(SeekFrom::Start(start))
    {
        log::warn!("seek failed: {e}; closing");
        return false;
    }
    match file_slot {
        Some(slot) if count > INLINE_FILE_MAX => {
            *slot = Some(FileBody {
                file,
                length: count,
                remaining: count,
                sendfile: true,
                short_sends: 0,
            });
            true
        }
        _ => {
            // Copied in, beside the head: it is small, and the connection stops answering
            // while its queue is over the high-water mark, so at most one such body sits
            // above it. Room for the whole body first, so that it arrives in one read(2).
            let owned = out.owned();
            owned.reserve(count as usize);
            match (&mut file).take(count).read_to_end(owned) {
                Ok(n) if n as u64 == count => true,
                Ok(_) | Err(_) => {
                    log::warn!("file changed while being read; closing");
                    false
                }
            }
        }
    }
}

/// The error response `e` to `req`.
fn error(out: &mut OutBuf, e: HttpError, req: &Request<'_>, ctx: &Context<'_>) -> Outcome {
    error_response(out, e, &Frame::of(req, ctx, Some(e)))
}

/// Writes a complete error response, with its small HTML page.
fn error_response(out: &mut OutBuf, e: HttpError, frame: &Frame<'_>) -> Outcome {
    let (code, reason) = e.status();
    let page = response::error_page(code, reason);
    let headers = |head: &mut Vec<u8>| {
        if e == HttpError::MethodNotAllowed {
            response::header(head, "Allow", "GET, HEAD, OPTIONS");
        }
        response::header(head, "Content-Type", "text/html; charset=utf-8");
    };
    respond(
        out,
        None,
        frame,
        (code, reason),
        headers,
        Body::Copy(page.as_bytes()),
    )
}

/// Queues the error response to a request whose head could not be used: HTTP/1.1, with its
/// page, and `Connection: close`, since nothing after it can be framed.
/// Returns the body bytes it queued, for the access log.
pub fn write_error(out: &mut OutBuf, e: HttpError, date: &DateCache) -> u64 {
    let frame = Frame {
        version: Version::Http11,
        head_only: false,
        keep_alive: false,
        date,
    };
    error_response(out, e, &frame).body_bytes
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
    /// `--cache-control`.
    cache_control: Option<&'a str>,
    /// [`file_headers`] for the full 200, written once when the file was cached.
    prebuilt: Option<&'a [u8]>,
}

/// Where a file's bytes come from.
enum Source<'a> {
    /// The cache holds them, shared.
    Memory(&'a Rc<[u8]>),
    /// The open file.
    Disk(File),
}

/// The response for a regular file: 304, 206, 416 or 200. `key` is the request's cache key
/// ([`static_files::cache_key`]), already worked out for the cache lookup.
fn serve_file(
    req: &Request<'_>,
    found: FoundFile,
    key: Option<Cow<'_, str>>,
    out: &mut OutBuf,
    file_slot: &mut Option<FileBody>,
    ctx: &mut Context<'_>,
) -> Outcome {
    let FoundFile {
        mut file,
        meta,
        content_type,
        coding,
        vary,
    } = found;
    let frame = Frame::of(req, ctx, None);
    let cache_control = ctx.files.options().cache_control.as_deref();
    let len = meta.len();
    // Small plain files go into the cache, and are served from it from now on: under the
    // normal form of their path, so that other spellings find the same entry.
    if let Some(key) = key.filter(|_| coding.is_none() && !vary && ctx.cache.accepts(len)) {
        let mut body = Vec::with_capacity(len as usize);
        match (&mut file).take(len).read_to_end(&mut body) {
            Ok(n) if n as u64 == len => {
                let mut entry = CachedFile::new(&meta, body, content_type, ctx.now);
                let mut fields = Vec::new();
                file_headers(&mut fields, &cached_view(&entry, cache_control), None);
                entry.head_fields = fields.into();
                return match ctx.cache.insert(key.into_owned(), entry, &file) {
                    Ok(entry) => serve_cached(req, entry, out, &frame, cache_control),
                    // Larger than the whole cache: served from the bytes just read, once.
                    Err(entry) => serve_cached(req, &entry, out, &frame, cache_control),
                };
            }
            _ => {
                log::warn!("{}: file changed while being read", req.target);
                return error(out, HttpError::Internal, req, ctx);
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
        cache_control,
        prebuilt: None,
    };
    respond_with_file(req, &view, Source::Disk(file), out, file_slot, &frame)
}

/// The response for a cached file.
fn serve_cached(
    req: &Request<'_>,
    entry: &CachedFile,
    out: &mut OutBuf,
    frame: &Frame<'_>,
    cache_control: Option<&str>,
) -> Outcome {
    let view = cached_view(entry, cache_control);
    let mut no_file = None;
    let source = Source::Memory(&entry.body);
    respond_with_file(req, &view, source, out, &mut no_file, frame)
}

/// How a cached file is described in its responses.
fn cached_view<'a>(entry: &'a CachedFile, cache_control: Option<&'a str>) -> FileView<'a> {
    FileView {
        len: entry.body.len() as u64,
        content_type: &entry.content_type,
        validators: &entry.validators,
        last_modified: entry.last_modified.as_deref(),
        coding: None,
        vary: false,
        cache_control,
        prebuilt: Some(&entry.head_fields[..]).filter(|f| !f.is_empty()),
    }
}

/// The header lines of a file's 200 or 206, between `Date` and `Content-Length`;
/// `range` is the 206's `(start, end)`. A cached file has its 200's written once, when
/// it is cached, and each response copies them in one piece: writing them line by line
/// was a fifth of the user-space time per request (`benches/parse_respond.rs`).
fn file_headers(head: &mut Vec<u8>, view: &FileView<'_>, range: Option<(u64, u64)>) {
    match range {
        Some((start, end)) => {
            let len = view.len;
            response::header(head, "Content-Range", &format!("bytes {start}-{end}/{len}"));
        }
        None => response::header(head, "Accept-Ranges", "bytes"),
    }
    response::header(head, "Content-Type", view.content_type);
    if let Some(coding) = view.coding {
        response::header(head, "Content-Encoding", coding.token());
    }
    response::header(head, "X-Content-Type-Options", "nosniff");
    validator_headers(head, view);
}

/// The headers every response about a file carries, 304 included (RFC 9110 section 15.4.5).
fn validator_headers(head: &mut Vec<u8>, view: &FileView<'_>) {
    response::header(head, "ETag", &view.validators.etag);
    if let Some(date) = view.last_modified {
        response::header(head, "Last-Modified", date);
    }
    if view.vary {
        response::header(head, "Vary", "Accept-Encoding");
    }
    if let Some(value) = view.cache_control {
        response::header(head, "Cache-Control", value);
    }
}

/// A file's request that gets an error page but keeps the connection (412, 416): the
/// page, its type, and the header lines `extra` writes.
fn file_error_page(
    out: &mut OutBuf,
    frame: &Frame<'_>,
    status: (u16, &str),
    extra: impl FnOnce(&mut Vec<u8>),
) -> Outcome {
    let page = response::error_page(status.0, status.1);
    let headers = |head: &mut Vec<u8>| {
        extra(head);
        response::header(head, "Content-Type", "text/html; charset=utf-8");
    };
    respond(
        out,
        None,
        frame,
        status,
        headers,
        Body::Copy(page.as_bytes()),
    )
}

/// Conditionals, then Range, then the head and the body (RFC 9110 sections 13.2.2, 14).
fn respond_with_file(
    req: &Request<'_>,
    view: &FileView<'_>,
    source: Source<'_>,
    out: &mut OutBuf,
    file_slot: &mut Option<FileBody>,
    frame: &Frame<'_>,
) -> Outcome {
    let len = view.len;
    let preconditions = req.preconditions();
    match conditional::evaluate(view.validators, &preconditions, SystemTime::now) {
        Condition::Send => {}
        Condition::NotModified => {
            let headers = |head: &mut Vec<u8>| validator_headers(head, view);
            return respond(out, None, frame, (304, "Not Modified"), headers, Body::None);
        }
        Condition::PreconditionFailed => {
            return file_error_page(out, frame, (412, "Precondition Failed"), |_| {});
        }
    }

    let wanted = match req.range {
        Some(range) if conditional::if_range_allows(view.validators, req.if_range) => {
            range::evaluate(range, len)
        }
        _ => RangeRequest::Full,
    };
    let (status, start, count) = match wanted {
        RangeRequest::Full => ((200, "OK"), 0, len),
        RangeRequest::Partial { start, end } => ((206, "Partial Content"), start, end - start + 1),
        RangeRequest::Unsatisfiable => {
            let range = |head: &mut Vec<u8>| {
                response::header(head, "Content-Range", &format!("bytes */{len}"));
            };
            return file_error_page(out, frame, (416, "Range Not Satisfiable"), range);
        }
    };
    let headers = |head: &mut Vec<u8>| match (status.0, view.prebuilt) {
        (206, _) => file_headers(head, view, Some((start, start + count - 1))),
        (_, Some(fields)) => head.extend_from_slice(fields),
        (_, None) => file_headers(head, view, None),
    };
    let body = match source {
        // `start..start + count` lies within the body: `range::evaluate` saw its length.
        Source::Memory(bytes) => Body::Shared(bytes, start as usize, (start + count) as usize),
        Source::Disk(file) => Body::File(file, start, count),
    };
    respond(out, Some(file_slot), frame, status, headers, body)
}

/// The health-check path of the metrics listener, whether or not `--health-path` is set.
pub const METRICS_HEALTH_PATH: &str = "/healthz";

/// The health path of the listener a request came in on: `--health-path` on the site's
/// listener, [`METRICS_HEALTH_PATH`] on the metrics listener.
fn health_path<'a>(ctx: &Context<'a>, site: bool) -> Option<&'a str> {
    if site {
        ctx.health_path
    } else {
        Some(METRICS_HEALTH_PATH)
    }
}

/// Whether `req` is a health check: a GET or HEAD of `path`, whatever its query string
/// (checkers add one to defeat caches).
fn is_health_check(req: &Request<'_>, path: Option<&str>) -> bool {
    // Compared in the files' normal form, so that every spelling the files would serve as
    // this path (absolute-form, %-escapes, `//`, `./`) is the health check too.
    matches!(req.method, Method::Get | Method::Head)
        && path.is_some_and(|p| static_files::cache_key(req.path()).is_some_and(|k| k == p))
}

/// The answer to a health check: `200 ok` while the server serves; `503 draining` from
/// SIGTERM on (the drain delay, then the shutdown), so that a load balancer takes the
/// server out while it still answers everything else. The 503 closes the connection: a
/// checker that keeps one open should not keep it to a server that is going away.
/// `no-store`: a cache between the checker and us must never answer for us.
fn answer_health(req: &Request<'_>, out: &mut OutBuf, ctx: &Context<'_>) -> Outcome {
    let mut frame = Frame::of(req, ctx, None);
    let (status, body) = if ctx.draining || ctx.shutting_down {
        frame.keep_alive = false;
        ((503, "Service Unavailable"), "draining")
    } else {
        ((200, "OK"), "ok")
    };
    let headers = |head: &mut Vec<u8>| {
        response::header(head, "Content-Type", "text/plain; charset=utf-8");
        response::header(head, "Cache-Control", "no-store");
    };
    respond(
        out,
        None,
        &frame,
        status,
        headers,
        Body::Copy(body.as_bytes()),
    )
}

/// The answer on the metrics listener: the counters at `/metrics`, health at
/// [`METRICS_HEALTH_PATH`], 404 elsewhere.
pub fn answer_metrics(
    req: &Request<'_>,
    out: &mut OutBuf,
    ctx: &mut Context<'_>,
    call: &mut Call<'_>,
) -> Outcome {
    if is_health_check(req, Some(METRICS_HEALTH_PATH)) {
        return answer_health(req, out, ctx);
    }
    if req.method == Method::Get {
        match req.path() {
            "/loop" => {
                let page = Reply::new(200, "text/html; charset=utf-8", live::PAGE)
                    .with_header("Cache-Control", "no-store");
                return write_reply(out, &page, &Frame::of(req, ctx, None));
            }
            "/loop/events" => {
                if let Some(outcome) = watch_the_loop(req, out, ctx, call) {
                    return outcome;
                }
            }
            _ => {}
        }
    }
    let Some(metrics) = ctx.metrics.as_deref() else {
        return error(out, HttpError::NotFound, req, ctx);
    };
    if !req.method.is_for_files() {
        return error(out, HttpError::MethodNotAllowed, req, ctx);
    }
    if req.path() != "/metrics" || req.method == Method::Options {
        return error(out, HttpError::NotFound, req, ctx);
    }
    let body = metrics.render(ctx.open_connections, ctx.access_log.dropped_total());
    let reply = Reply::new(200, "text/plain; version=0.0.4; charset=utf-8", body);
    write_reply(out, &reply, &Frame::of(req, ctx, None))
}

/// `GET /loop/events` on the metrics listener: a Server-Sent Events stream of the loop's
/// snapshots ([`live`]). It is a streamed body like a handler's ([`crate::deferred`]): the
/// loop holds its sender and feeds it a few times a second, and the connection takes the
/// pieces as its client reads them. `None` outside a running loop (then 404).
fn watch_the_loop(
    req: &Request<'_>,
    out: &mut OutBuf,
    ctx: &mut Context<'_>,
    call: &mut Call<'_>,
) -> Option<Outcome> {
    let mailbox = Arc::clone(ctx.mailbox?);
    if ctx.watchers.as_ref()?.len() >= live::MAX_WATCHERS {
        let busy = Reply::text(503, "too many live views open; try again later\n")
            .with_header("Retry-After", "1");
        return Some(write_reply(out, &busy, &Frame::of(req, ctx, None)));
    }
    let (later, sender) = Later::stream(mailbox, call.key, live::QUEUE);
    let Later::Stream(mut stream) = later else {
        return None;
    };
    stream.chunked = req.version == Version::Http11;
    let frame = Frame::of(req, ctx, None);
    let frame = Frame {
        keep_alive: frame.keep_alive && stream.chunked,
        ..frame
    };
    let head = Reply::new(200, "text/event-stream", "").with_header("Cache-Control", "no-store");
    let (outcome, body) = write_stream_head(out, &head, &frame, stream.chunked);
    if body {
        call.later = Some(Later::Stream(stream));
        if let Some(watchers) = ctx.watchers.as_deref_mut() {
            watchers.push(sender);
        }
    }
    Some(outcome)
}

/// Calls into the handler (`accepts_body` or `handle`: every callback the loop makes into
/// the library user's code goes through here), and turns a panic in it into `Err(())`: the
/// server answers 500 and goes on serving everyone else (the release profile keeps
/// `panic = "unwind"` for this).
///
/// `AssertUnwindSafe` is sound enough here: the closure touches nothing of the server's,
/// only the handler, the request (read-only) and the exchange, which is dropped unused on a
/// panic. The server's own state (this connection's buffers, the cache, the loop) is not in
/// the middle of a change while the handler runs, so it is consistent after the unwind.
/// The handler's own state may not be, and it will be asked again for later requests: that
/// is logged at error, for its author to look at.
fn catch<T>(req: &Request<'_>, call: impl FnOnce() -> T) -> Result<T, ()> {
    panic::catch_unwind(AssertUnwindSafe(call)).map_err(|payload| {
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

/// A handler's status, if it is one we can send (a final status: 1xx are the server's).
fn reply_status(reply: &Reply) -> u16 {
    if (200..1000).contains(&reply.status) {
        reply.status
    } else {
        log::error!("handler returned status {}; sending 500", reply.status);
        500
    }
}

/// Writes the head of a streamed reply: no `Content-Length`, and `Transfer-Encoding:
/// chunked` when `chunked` (else the body ends with the connection, which `frame` closes).
/// Then its body, as the first piece. Returns the outcome, and whether a body follows (not
/// after HEAD, 204 or 304).
fn write_stream_head(
    out: &mut OutBuf,
    reply: &Reply,
    frame: &Frame<'_>,
    chunked: bool,
) -> (Outcome, bool) {
    let status = reply_status(reply);
    if status == 204 || status == 304 {
        // No body at all: an ordinary reply says so best.
        let outcome = write_reply(out, reply, frame);
        return (outcome, false);
    }
    let headers = |head: &mut Vec<u8>| {
        reply_headers(head, reply);
        if chunked {
            // RFC 9112 section 6.1: the body is a series of chunks, ended by the last one.
            response::header(head, "Transfer-Encoding", "chunked");
        }
    };
    let reason = response::reason(status);
    let outcome = respond(out, None, frame, (status, reason), headers, Body::None);
    if frame.head_only {
        // The head a GET would get (RFC 9110 section 9.3.2), with its framing (chunked, or
        // none: to the close), and no body: not the first piece's length.
        return (outcome, false);
    }
    deferred::frame_piece(out, &reply.body, chunked);
    (outcome, true)
}

/// The handler's `Content-Type` and headers, without those that would split the response
/// or that only the server may set.
fn reply_headers(head: &mut Vec<u8>, reply: &Reply) {
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
}

/// Writes a handler's reply.
fn write_reply(out: &mut OutBuf, reply: &Reply, frame: &Frame<'_>) -> Outcome {
    let status = reply_status(reply);
    let headers = |head: &mut Vec<u8>| reply_headers(head, reply);
    // 204 and 304 have no body and no Content-Length (RFC 9110 sections 8.6, 15.3.5).
    let body = if status == 204 || status == 304 {
        Body::None
    } else {
        Body::Copy(&reply.body)
    };
    respond(
        out,
        None,
        frame,
        (status, response::reason(status)),
        headers,
        body,
    )
}

/// Records one answered request in the counters (unless `site` is false: scrapes of the
/// metrics are not traffic; health checks are counted apart), and returns its access-log
/// entry when there is a log (and it is the site's, and not a health check). The connection
/// writes that line once the response has gone out (see [`crate::ops::access_log::Unsent`]).
pub fn record<'r>(
    ctx: &mut Context<'_>,
    peer: Option<std::net::SocketAddr>,
    req: &'r Request<'_>,
    outcome: &Outcome,
    started: Instant,
    site: bool,
) -> Option<Entry<'r>> {
    // A balancer's health checks every few hundred milliseconds would drown the site's
    // lines and skew its counters: they get a counter of their own, and are treated like
    // scrapes otherwise.
    if is_health_check(req, health_path(ctx, site)) {
        if let Some(metrics) = ctx.metrics.as_deref_mut() {
            metrics.health_check(outcome.status);
        }
        return None;
    }
    // Scrapes of the metrics listener are not the site's traffic: neither counted nor logged.
    let logging = site && ctx.access_log.enabled();
    if let Some(metrics) = ctx.metrics.as_deref_mut().filter(|_| site) {
        let took = Instant::now().saturating_duration_since(started);
        metrics.request(req.method, outcome.status, outcome.body_bytes, took);
    }
    logging.then(|| log_entry(ctx, peer, req, outcome))
}

/// The access-log entry for one answered request; its time is filled in when it is written.
fn log_entry<'r>(
    ctx: &Context<'_>,
    peer: Option<std::net::SocketAddr>,
    req: &'r Request<'_>,
    outcome: &Outcome,
) -> Entry<'r> {
    let header = ctx.real_ip_header;
    let client =
        crate::ops::proxy::client_addr(peer, header, req.headers_named(header.name()), ctx.trusted);
    Entry {
        peer: client,
        peer_is_unix: peer.is_none() && client.is_none(),
        request_line: req.request_line(),
        status: outcome.status,
        body_bytes: outcome.body_bytes,
        referer: req.referer,
        user_agent: req.user_agent,
        micros: 0,
    }
}
