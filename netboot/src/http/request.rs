//! The request head as netboot's HTTP server reads it: the request line
//! and header lines of a GET or HEAD, bounded in size, judged as bytes
//! arrive. Every refusal names what was wrong and what was expected; no
//! input makes it panic, and it never looks past [`MAX_HEAD`] bytes.

/// The request line's bound: PXE tree names are short, so a longer line is
/// not a boot client.
pub const MAX_LINE: usize = 2048;
/// The bound of the request line and every header line together.
pub const MAX_HEAD: usize = 8192;

/// The statuses the server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeadersTooLarge,
    Busy,
    VersionNotSupported,
}

impl Status {
    pub fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large",
            Status::Busy => "503 Service Unavailable",
            Status::VersionNotSupported => "505 HTTP Version Not Supported",
        }
    }

    pub fn code(self) -> &'static str {
        &self.line()[..3]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    /// The request target as sent: printable ASCII without spaces.
    pub path: &'a str,
}

/// A request the server refuses: the status and why, for the client and
/// the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: Status,
    pub why: String,
}

fn refuse(status: Status, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// Judges the bytes a client sent so far: `Ok(None)` while the head may
/// still complete within the bounds.
pub fn parse(bytes: &[u8]) -> Result<Option<Request<'_>>, Refusal> {
    let Some(line_end) = bytes.iter().position(|&b| b == b'\n') else {
        return if bytes.len() > MAX_LINE {
            Err(too_long_line())
        } else {
            Ok(None)
        };
    };
    if line_end > MAX_LINE {
        return Err(too_long_line());
    }
    let line = strip_cr(&bytes[..line_end]);
    let request = request_line(line)?;
    let Some(head_end) = end_of_head(bytes, line_end + 1) else {
        return if bytes.len() > MAX_HEAD {
            Err(refuse(
                Status::HeadersTooLarge,
                format!("request head longer than {MAX_HEAD} bytes"),
            ))
        } else {
            Ok(None)
        };
    };
    if head_end > MAX_HEAD {
        return Err(refuse(
            Status::HeadersTooLarge,
            format!("request head longer than {MAX_HEAD} bytes"),
        ));
    }
    let headers = &bytes[line_end + 1..head_end];
    for (n, header) in headers.split(|&b| b == b'\n').map(strip_cr).enumerate() {
        if header.is_empty() {
            continue;
        }
        if !header.contains(&b':') {
            return Err(refuse(
                Status::BadRequest,
                format!(
                    "header line {} {:?} has no ':' (expected Name: value)",
                    n + 1,
                    String::from_utf8_lossy(&header[..header.len().min(64)])
                ),
            ));
        }
    }
    Ok(Some(request))
}

fn too_long_line() -> Refusal {
    refuse(
        Status::BadRequest,
        format!("request line longer than {MAX_LINE} bytes"),
    )
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where the empty line that ends the head ends, searching from `from`
/// (the start of the first header line).
fn end_of_head(bytes: &[u8], from: usize) -> Option<usize> {
    let mut start = from;
    loop {
        let rest = bytes.get(start..)?;
        let end = rest.iter().position(|&b| b == b'\n')?;
        if strip_cr(&rest[..end]).is_empty() {
            return Some(start + end + 1);
        }
        start += end + 1;
    }
}

fn request_line(line: &[u8]) -> Result<Request<'_>, Refusal> {
    let expected = "expected METHOD /path HTTP/1.x";
    // Printable ASCII only, so the path is safe to log as it is.
    let text = std::str::from_utf8(line)
        .ok()
        .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or_else(|| {
            refuse(
                Status::BadRequest,
                format!("request line is not printable ASCII; {expected}"),
            )
        })?;
    let shown = || text.chars().take(64).collect::<String>();
    let mut words = text.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(refuse(
            Status::BadRequest,
            format!("request line {:?}: {expected}", shown()),
        ));
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(refuse(
            Status::VersionNotSupported,
            format!("version {version:?}: expected HTTP/1.0 or HTTP/1.1"),
        ));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => {
            return Err(refuse(
                Status::MethodNotAllowed,
                format!("method {other:?}: only GET and HEAD are served"),
            ))
        }
    };
    if path.is_empty() {
        return Err(refuse(
            Status::BadRequest,
            format!("request line {:?}: {expected}", shown()),
        ));
    }
    Ok(Request { method, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_judged_as_they_arrive() {
        type Expected = Result<Option<(Method, &'static str)>, (Status, &'static str)>;
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE));
        let no_newline = "a".repeat(MAX_LINE + 1);
        let long_head = format!("GET / HTTP/1.1\r\n{}", "X-A: b\r\n".repeat(1100));
        let table: Vec<(&[u8], Expected)> = vec![
            (b"", Ok(None)),
            (b"GET /vmlinuz HT", Ok(None)),
            (b"GET /vmlinuz HTTP/1.1\r\nHost: x\r\n", Ok(None)),
            (
                b"GET /vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n",
                Ok(Some((Method::Get, "/vmlinuz"))),
            ),
            (
                b"HEAD /boot.ipxe HTTP/1.0\n\n",
                Ok(Some((Method::Head, "/boot.ipxe"))),
            ),
            (b"GET / HTTP/1.1\r\n\r\n", Ok(Some((Method::Get, "/")))),
            (
                b"POST /x HTTP/1.1\r\n\r\n",
                Err((Status::MethodNotAllowed, "method \"POST\"")),
            ),
            (
                b"GET /x HTTP/2\r\n\r\n",
                Err((Status::VersionNotSupported, "version \"HTTP/2\"")),
            ),
            (
                b"GET /x\r\n\r\n",
                Err((Status::BadRequest, "expected METHOD /path HTTP/1.x")),
            ),
            (
                b"GET  /x HTTP/1.1\r\n\r\n",
                Err((Status::BadRequest, "expected METHOD /path HTTP/1.x")),
            ),
            (
                b"GET /\x1b[2J HTTP/1.1\r\n\r\n",
                Err((Status::BadRequest, "not printable ASCII")),
            ),
            (
                b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
                Err((Status::BadRequest, "header line 1 \"no colon\" has no ':'")),
            ),
            (
                long_line.as_bytes(),
                Err((Status::BadRequest, "request line longer than 2048 bytes")),
            ),
            (
                no_newline.as_bytes(),
                Err((Status::BadRequest, "request line longer than 2048 bytes")),
            ),
            (
                long_head.as_bytes(),
                Err((
                    Status::HeadersTooLarge,
                    "request head longer than 8192 bytes",
                )),
            ),
        ];
        for (bytes, expected) in table {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
            match (parse(bytes), expected) {
                (Ok(None), Ok(None)) => {}
                (Ok(Some(r)), Ok(Some((method, path)))) => {
                    assert_eq!((r.method, r.path), (method, path), "{shown:?}")
                }
                (Err(r), Err((status, why))) => {
                    assert_eq!(r.status, status, "{shown:?}: {}", r.why);
                    assert!(r.why.contains(why), "{shown:?}: {}", r.why);
                }
                (got, _) => panic!("{shown:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn statuses_have_their_codes() {
        assert_eq!(Status::HeadersTooLarge.code(), "431");
        assert_eq!(Status::Busy.line(), "503 Service Unavailable");
    }
}
