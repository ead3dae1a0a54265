//! The HTTP side of /metrics: just enough HTTP/1.1 to be scraped, and
//! strict about the rest. A request is a head (request line and headers,
//! at most [`MAX_HEAD`] bytes) and no body; `GET` and `HEAD` of
//! `/metrics` are answered with the exposition, any other path with 404,
//! any other method with 405; a head that is too big, malformed, or that
//! announces a body is answered with an error and the connection closes.
//! Connections are persistent (HTTP/1.1's default) unless the client says
//! `Connection: close` or speaks HTTP/1.0 without keep-alive.

/// The largest request head taken; Prometheus sends about 300 bytes.
pub(crate) const MAX_HEAD: usize = 8192;

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// No complete head yet (and within [`MAX_HEAD`]).
    Partial,
    /// A complete request of `len` bytes, and what to answer.
    Request { len: usize, answer: Answer },
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: Status,
    /// `HEAD`: the headers only.
    pub(crate) head_only: bool,
    /// Close once the response is written.
    pub(crate) close: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// The exposition.
    Metrics,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeadTooLarge,
    VersionNotSupported,
    /// More HTTP connections than the server takes at once.
    Busy,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Metrics => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::VersionNotSupported => "505 HTTP Version Not Supported",
            Status::Busy => "503 Service Unavailable",
        }
    }
}

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How far a head has been looked at, so bytes that arrive one at a time
/// are scanned once, not once per arrival.
#[derive(Default)]
pub(crate) struct HeadScan {
    /// The start of the first line not yet complete.
    line_start: usize,
    /// A line with content (the request line) has been seen.
    seen_content: bool,
}

/// Looks for a complete request head at the start of `buf`, going on from
/// where `scan` stopped (a fresh `HeadScan` for each request).
pub(crate) fn parse(buf: &[u8], scan: &mut HeadScan) -> Parsed {
    let Some(len) = head_end(buf, scan) else {
        if buf.len() > MAX_HEAD {
            return Parsed::Request {
                len: buf.len(),
                answer: fatal(Status::HeadTooLarge),
            };
        }
        return Parsed::Partial;
    };
    if len > MAX_HEAD {
        return Parsed::Request {
            len,
            answer: fatal(Status::HeadTooLarge),
        };
    }
    let answer = answer(&buf[..len]).unwrap_or_else(fatal);
    Parsed::Request { len, answer }
}

fn fatal(status: Status) -> Answer {
    Answer {
        status,
        head_only: false,
        close: true,
    }
}

/// The end of the head (after its empty line); a bare LF ends lines too,
/// as RFC 9112 lets a server accept.
fn head_end(buf: &[u8], scan: &mut HeadScan) -> Option<usize> {
    let mut at = scan.line_start.min(buf.len());
    while let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') {
        let line = &buf[at..at + nl];
        at += nl + 1;
        scan.line_start = at;
        if line.is_empty() || line == b"\r" {
            // Empty lines before the request line are skipped (RFC 9112
            // 2.2); an empty line after it ends the head.
            if scan.seen_content {
                return Some(at);
            }
        } else {
            scan.seen_content = true;
        }
    }
    None
}

/// The answer to a complete head, or the error status that closes.
fn answer(head: &[u8]) -> Result<Answer, Status> {
    let text = std::str::from_utf8(head).map_err(|_| Status::BadRequest)?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let request_line = lines.next().ok_or(Status::BadRequest)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    if method.is_empty() || !method.bytes().all(is_token) || !target.starts_with('/') {
        return Err(Status::BadRequest);
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => return Err(Status::VersionNotSupported),
        _ => return Err(Status::BadRequest),
    };
    let headers = Headers::read(lines)?;
    if headers.has_body {
        // A body is not read; what follows it could not be framed.
        return Err(Status::BadRequest);
    }
    let close = headers.close || (http10 && !headers.keep_alive);
    let path = target.split('?').next().unwrap_or(target);
    let status = match (method, path) {
        ("GET" | "HEAD", "/metrics") => Status::Metrics,
        ("GET" | "HEAD", _) => Status::NotFound,
        _ => Status::MethodNotAllowed,
    };
    Ok(Answer {
        status,
        head_only: method == "HEAD",
        close,
    })
}

#[derive(Default)]
struct Headers {
    close: bool,
    keep_alive: bool,
    has_body: bool,
}

impl Headers {
    fn read<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Headers, Status> {
        let mut h = Headers::default();
        for line in lines.take_while(|l| !l.is_empty()) {
            // No folded lines, no space before the colon (RFC 9112 5.1).
            let (name, value) = line.split_once(':').ok_or(Status::BadRequest)?;
            if name.is_empty() || !name.bytes().all(is_token) {
                return Err(Status::BadRequest);
            }
            let value = value.trim_matches([' ', '\t']);
            if name.eq_ignore_ascii_case("connection") {
                for option in value.split(',').map(str::trim) {
                    h.close |= option.eq_ignore_ascii_case("close");
                    h.keep_alive |= option.eq_ignore_ascii_case("keep-alive");
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                h.has_body = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                let n: u64 = value.parse().map_err(|_| Status::BadRequest)?;
                h.has_body |= n > 0;
            }
        }
        Ok(h)
    }
}

/// RFC 9110's `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends the response for `answer` to `out`; `body` renders the
/// exposition when it is asked for.
pub(crate) fn respond(out: &mut Vec<u8>, answer: &Answer, body: impl FnOnce() -> String) {
    let body = match answer.status {
        Status::Metrics => body(),
        s => format!("{}\n", s.line()),
    };
    let content_type = match answer.status {
        Status::Metrics => CONTENT_TYPE,
        _ => "text/plain; charset=utf-8",
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(answer.status.line().as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(format!("\r\nContent-Length: {}\r\n", body.len()).as_bytes());
    if answer.status == Status::MethodNotAllowed {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    if answer.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !answer.head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

/// The response to a request that could not be read in time, or to a
/// client over the connection limit: status, then close.
pub(crate) fn refuse(out: &mut Vec<u8>, status: Status) {
    respond(out, &fatal(status), String::new);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(req: &str) -> (Status, bool) {
        match parse(req.as_bytes(), &mut HeadScan::default()) {
            Parsed::Request { answer, len } => {
                assert_eq!(len, req.len(), "{req:?}");
                (answer.status, answer.close)
            }
            Parsed::Partial => panic!("partial: {req:?}"),
        }
    }

    #[test]
    fn scrapes_are_answered_and_kept_alive() {
        let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n";
        assert_eq!(status(req), (Status::Metrics, false));
        assert_eq!(
            status("GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            (Status::Metrics, true)
        );
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"),
            (Status::Metrics, true)
        );
        assert_eq!(
            status("GET /metrics HTTP/1.1\n\n"),
            (Status::Metrics, false)
        );
    }

    #[test]
    fn other_paths_methods_and_versions() {
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), (Status::NotFound, false));
        assert_eq!(
            status("POST /metrics HTTP/1.1\r\n\r\n"),
            (Status::MethodNotAllowed, false)
        );
        assert_eq!(
            status("GET /metrics HTTP/2.0\r\n\r\n").0,
            Status::VersionNotSupported
        );
        assert_eq!(status("GET /metrics\r\n\r\n").0, Status::BadRequest);
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\nBad Header: x\r\n\r\n").0,
            Status::BadRequest
        );
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            (Status::BadRequest, true)
        );
        assert_eq!(
            status("GET /metrics HTTP/1.1\r\n folded\r\n\r\n").0,
            Status::BadRequest
        );
    }

    #[test]
    fn heads_are_bounded() {
        let mut scan = HeadScan::default();
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        for end in 1..head.len() {
            assert_eq!(parse(&head[..end], &mut scan), Parsed::Partial);
        }
        assert!(matches!(parse(head, &mut scan), Parsed::Request { len, .. } if len == head.len()));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(
            parse(huge.as_bytes(), &mut HeadScan::default()),
            Parsed::Request {
                answer: Answer {
                    status: Status::HeadTooLarge,
                    close: true,
                    ..
                },
                ..
            }
        ));
    }

    /// Whatever arrives, parsing neither panics nor claims more bytes than
    /// it was given, and every head past the bound is refused.
    #[test]
    fn arbitrary_bytes_are_parsed_safely() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"GET /metrics HTTP/1.1\r\n:Content-Length 0\xff";
        for _ in 0..20_000 {
            let len = (next() % 300) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if let Parsed::Request { len, .. } = parse(&buf, &mut HeadScan::default()) {
                assert!(len <= buf.len());
            }
        }
        let endless = vec![b'a'; MAX_HEAD + 1];
        assert!(matches!(
            parse(&endless, &mut HeadScan::default()),
            Parsed::Request {
                answer: Answer { close: true, .. },
                ..
            }
        ));
    }

    #[test]
    fn responses_carry_their_length() {
        let mut out = Vec::new();
        let answer = Answer {
            status: Status::Metrics,
            head_only: false,
            close: false,
        };
        respond(&mut out, &answer, || "a 1\n".into());
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
              Content-Length: 4\r\n\r\na 1\n"
        );
    }
}
