//! Email: the `Mailer` port over plain SMTP (lettre) or into a maildir folder.
//!
//! [`build_message`] turns the port's [`Email`] into RFC 5322 bytes; both
//! adapters send exactly those bytes. Errors cross the port only as
//! [`MailError`]: `Transient` when trying again later may work (server down,
//! timeout, 4xx, disk trouble), `Permanent` when this message can never go
//! out as it is (bad address, 5xx).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::header::{self, ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use usher_actors::ports::{BoxFuture, Email, MailError, Mailer};

// ---------------------------------------------------------------------------
// The message

/// The email as RFC 5322 bytes (CRLF line endings), ready for SMTP `DATA`.
///
/// Headers: `Message-ID` (from `email.message_id`), `Date` (now), `From`,
/// `To` (one address or a comma-separated list; display names may be
/// non-ASCII), `Subject` (RFC 2047-encoded when not ASCII), `MIME-Version`.
/// The text is a `text/plain; charset=utf-8` part. With attachments the
/// message is `multipart/mixed`: the text first, then each attachment as a
/// base64 part with its content type and `Content-Disposition: attachment;
/// filename=…` (RFC 2231-encoded when not ASCII).
///
/// `message_id` is used as is when written `<left@right>`; a bare
/// `left@right` gets the angle brackets. One without `@`, with spaces,
/// control characters or non-ASCII is refused, as are unparsable addresses
/// and content types: all `MailError::Permanent`.
pub fn build_message(email: &Email) -> Result<Vec<u8>, MailError> {
    Ok(to_lettre(email)?.formatted())
}

/// A recipient's address as the mailer will use it: one bare address
/// (`local@domain`), checked by `lettre` (RFC 5322's addr-spec) and, for the
/// domain, as a host name people's mail reaches (RFC 1123 labels of letters,
/// digits and inner hyphens, at least two of them; no address literals).
/// The gateway checks buyers' addresses with this, so an order whose email
/// can never be sent is never created. Errors are plain sentences.
pub fn parse_address(s: &str) -> Result<String, String> {
    let s = s.trim();
    let address: lettre::Address = s.parse().map_err(|_| format!("{} is not an email address", usher_engine::quoted(s)))?;
    let domain = address.domain();
    let labels: Vec<&str> = domain.split('.').collect();
    let host_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !host_ok {
        return Err(format!("{} is not an email address: {} is not a mail domain", usher_engine::quoted(s), usher_engine::quoted(domain)));
    }
    Ok(address.to_string())
}

fn to_lettre(email: &Email) -> Result<Message, MailError> {
    let from: Mailbox =
        email.from.trim().parse().map_err(|e| MailError::Permanent(format!("invalid From address {:?}: {e}", email.from)))?;
    let to: Mailboxes = email.to.trim().parse().map_err(|e| MailError::Permanent(format!("invalid To address {:?}: {e}", email.to)))?;
    // Each recipient passes the same check the gateway made when the order was created.
    for mb in to.iter() {
        parse_address(mb.email.as_ref()).map_err(MailError::Permanent)?;
    }
    if to.iter().next().is_none() {
        return Err(MailError::Permanent("no To address".into()));
    }
    let builder = Message::builder()
        .header(header::MessageId::from(message_id(&email.message_id)?))
        .date_now()
        .from(from)
        .mailbox(header::To::from(to))
        .subject(email.subject.clone());
    // W3C Trace Context's header, as HTTP spells it; checked like every
    // header value (no line breaks can reach the message).
    let builder = match &email.trace {
        Some(tp) if !tp.is_empty() && tp.chars().all(|c| c.is_ascii_hexdigit() || c == '-') => {
            builder.raw_header(header::HeaderValue::new(header::HeaderName::new_from_ascii_str("Traceparent"), tp.clone()))
        }
        _ => builder,
    };

    let text = SinglePart::plain(email.text.clone());
    let built = if email.attachments.is_empty() {
        builder.singlepart(text)
    } else {
        let mut mixed = MultiPart::mixed().singlepart(text);
        for a in &email.attachments {
            let content_type = ContentType::parse(&a.content_type).map_err(|e| {
                MailError::Permanent(format!("attachment {:?}: invalid content type {:?}: {e}", a.filename, a.content_type))
            })?;
            if a.filename.trim().is_empty() || a.filename.chars().any(char::is_control) {
                return Err(MailError::Permanent(format!("attachment: invalid file name {:?}", a.filename)));
            }
            let body = Body::new_with_encoding(a.bytes.clone(), ContentTransferEncoding::Base64)
                .map_err(|_| MailError::Permanent(format!("attachment {:?}: cannot be base64-encoded", a.filename)))?;
            mixed = mixed.singlepart(lettre::message::Attachment::new(a.filename.clone()).body(body, content_type));
        }
        builder.multipart(mixed)
    };
    built.map_err(|e| MailError::Permanent(format!("cannot build the message: {e}")))
}

/// `<left@right>`, from either that or a bare `left@right`.
fn message_id(raw: &str) -> Result<String, MailError> {
    let raw = raw.trim();
    let inner = raw.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(raw);
    let valid = inner.split_once('@').is_some_and(|(left, right)| !left.is_empty() && !right.is_empty())
        && inner.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'));
    if valid { Ok(format!("<{inner}>")) } else { Err(MailError::Permanent(format!("invalid Message-ID {raw:?}: expected <left@right>"))) }
}

// ---------------------------------------------------------------------------
// SMTP

/// `SmtpMailer::from_url` could not use its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailUrlError(pub String);

impl fmt::Display for MailUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid mail URL: {}", self.0)
    }
}

impl std::error::Error for MailUrlError {}

/// Sends over plain SMTP (no TLS: meant for a relay on the same host or
/// network, e.g. a local Postfix or a test sink), one connection per message
/// (`EHLO`, optional `AUTH`, `MAIL`, `RCPT`, `DATA`, `QUIT`).
///
/// Errors: 5xx replies, a server that lacks what the message needs (e.g.
/// `SMTPUTF8` for a non-ASCII address) or no common AUTH mechanism →
/// `Permanent`; 4xx replies, refused connections, network errors and
/// timeouts → `Transient`. A timeout after `DATA` was sent may mean the
/// message did arrive: a retry then delivers it twice, with the same
/// `Message-ID`.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    builder: lettre::transport::smtp::AsyncSmtpTransportBuilder,
    describe: String,
    send_timeout: Duration,
}

impl SmtpMailer {
    /// TCP connect timeout.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Deadline for one whole send: connect, every command and the data.
    pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

    /// `smtp://[user[:password]@]host[:port][/ehlo-name]`.
    ///
    /// - Only the `smtp` scheme (plain, unencrypted). `smtps://` and
    ///   `?tls=…` are refused: this build has no TLS stack.
    /// - The port defaults to 25. The host may be a name, an IPv4 address or
    ///   a bracketed IPv6 address.
    /// - `user:password` (percent-encoded in the URL) enables `AUTH PLAIN`
    ///   or `AUTH LOGIN`, whichever the server offers, sent in clear text.
    /// - A path sets the name sent with `EHLO` (default `[127.0.0.1]`).
    pub fn from_url(url: &str) -> Result<Self, MailUrlError> {
        let parsed = url::Url::parse(url).map_err(|e| MailUrlError(format!("{url:?}: {e}")))?;
        match parsed.scheme() {
            "smtp" => {}
            "smtps" => return Err(MailUrlError(format!("{url:?}: smtps (TLS) is not supported by this build; use smtp://host:port"))),
            other => return Err(MailUrlError(format!("{url:?}: unsupported scheme {other:?}; expected smtp://host:port"))),
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(MailUrlError(format!("{url:?}: no query or fragment allowed (TLS options are not supported by this build)")));
        }
        let (host, shown_host) = match parsed.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => (d.to_owned(), d.to_owned()),
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), ip.to_string()),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), format!("[{ip}]")),
            _ => return Err(MailUrlError(format!("{url:?}: no host"))),
        };
        let port = parsed.port().unwrap_or(25);
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port).timeout(Some(Self::CONNECT_TIMEOUT));
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().map(|c| c.into_owned());
        if !parsed.username().is_empty() || parsed.password().is_some() {
            let user = decode(parsed.username()).map_err(|e| MailUrlError(format!("user name: {e}")))?;
            let password = decode(parsed.password().unwrap_or("")).map_err(|e| MailUrlError(format!("password: {e}")))?;
            builder = builder.credentials(Credentials::new(user, password));
        }
        let ehlo = parsed.path().trim_matches('/');
        if !ehlo.is_empty() {
            builder = builder.hello_name(ClientId::Domain(ehlo.to_owned()));
        }
        Ok(Self {
            transport: builder.clone().build(),
            builder,
            describe: format!("smtp://{shown_host}:{port}"),
            send_timeout: Self::SEND_TIMEOUT,
        })
    }

    /// Replaces the connect timeout and the deadline of a whole send.
    pub fn with_timeouts(mut self, connect: Duration, send: Duration) -> Self {
        self.builder = self.builder.timeout(Some(connect));
        self.transport = self.builder.clone().build();
        self.send_timeout = send;
        self
    }

    fn map_error(&self, e: &lettre::transport::smtp::Error) -> MailError {
        let text = format!("{}: {e}", self.describe);
        if e.is_permanent() || e.is_client() { MailError::Permanent(text) } else { MailError::Transient(text) }
    }
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the transport: it would show the credentials.
        f.debug_struct("SmtpMailer").field("server", &self.describe).field("send_timeout", &self.send_timeout).finish()
    }
}

impl Mailer for SmtpMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            let message = to_lettre(email)?;
            match tokio::time::timeout(self.send_timeout, self.transport.send(message)).await {
                Ok(Ok(_response)) => Ok(()),
                Ok(Err(e)) => Err(self.map_error(&e)),
                Err(_) => Err(MailError::Transient(format!("{}: no answer within {:?}", self.describe, self.send_timeout))),
            }
        })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

// ---------------------------------------------------------------------------
// Maildir

/// Delivers each message as one file of a maildir folder (`tmp/`, `new/`,
/// `cur/`, created when missing): written to `tmp/<unique>`, fsynced, renamed
/// to `new/<unique>`, then `new/` is fsynced, so a reader never sees half a
/// message and a delivered one survives a crash. Files hold the bytes of
/// [`build_message`] with LF line endings, as maildir readers expect.
/// IO errors are `Transient`.
#[derive(Debug, Clone)]
pub struct MaildirMailer {
    dir: PathBuf,
}

static MAILDIR_SEQ: AtomicU64 = AtomicU64::new(0);

impl MaildirMailer {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Mailer for MaildirMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            let bytes = crlf_to_lf(&build_message(email)?);
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || deliver(&dir, &bytes))
                .await
                .map_err(|e| MailError::Transient(format!("maildir {}: delivery task failed: {e}", self.dir.display())))?
                .map(|_path| ())
        })
    }

    fn describe(&self) -> String {
        format!("maildir {}", self.dir.display())
    }
}

/// The maildir delivery protocol; returns the delivered file.
fn deliver(dir: &Path, bytes: &[u8]) -> Result<PathBuf, MailError> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        MailError::Transient(format!("maildir {}: {what} {}: {e}", dir.display(), path.display()))
    };
    for sub in ["tmp", "new", "cur"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(|e| fail("cannot create", &path, e))?;
    }
    let name = unique_name();
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    let written = (|| {
        // A message carries tickets: readable by the owner only.
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("cannot write", &tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, &new) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("cannot move into new/", &tmp, e));
    }
    let new_dir = dir.join("new");
    std::fs::File::open(&new_dir).and_then(|d| d.sync_all()).map_err(|e| fail("cannot sync", &new_dir, e))?;
    Ok(new)
}

/// `<secs>.M<micros>P<pid>Q<seq>R<random>.usher`: unique across processes
/// (pid, random), within one (sequence) and over time.
fn unique_name() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let seq = MAILDIR_SEQ.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}.M{}P{}Q{seq}R{}.usher", now.as_secs(), now.subsec_micros(), std::process::id(), &random[..16])
}

fn crlf_to_lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod address_tests {
    use super::parse_address;

    #[test]
    fn addresses_that_can_never_be_delivered_are_refused() {
        for bad in [
            "a,b@x.co",
            "a<b@x.co",
            "a;b@x.co",
            "a(comment)@x.co",
            "a@[x.co]",
            "a@-x.co",
            "a..b@x.co",
            "a@x",
            "@x.co",
            "a@x..co",
            "a b@x.co",
            "",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["ann@example.com", "ann.lee+tickets@mail.example.co.uk", "o'brien@x-y.io", " ivy@example.com "] {
            assert_eq!(parse_address(good).as_deref(), Ok(good.trim()), "{good:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;
    use std::time::Instant;

    use usher_actors::ports::Attachment;

    use super::*;

    const INSTALL_HINT: &str = "these tests need python3 with the aiosmtpd package: pip install aiosmtpd";
    const SINK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/smtp-sink.py");

    /// A fresh directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let path = std::env::temp_dir().join(format!("usher-mail-test-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// scripts/smtp-sink.py as a child process, killed on drop.
    struct Sink {
        child: std::process::Child,
        port: u16,
    }

    impl Sink {
        async fn start(dir: &Path, port: u16, extra: &[&str]) -> Self {
            let mut child = std::process::Command::new("python3")
                .arg(SINK)
                .arg("--port")
                .arg(port.to_string())
                .arg("--dir")
                .arg(dir)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {INSTALL_HINT}"));
            // The first line, read on a blocking thread (ends at EOF if the script dies).
            let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            let first_line = tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut stdout, &mut line).map(|_| line)
            });
            let read = tokio::time::timeout(Duration::from_secs(30), first_line).await;
            let line = match &read {
                Ok(Ok(Ok(line))) => line.clone(),
                _ => String::new(),
            };
            if let Some(port) = line.trim().strip_prefix("listening 127.0.0.1:").and_then(|p| p.parse::<u16>().ok()) {
                return Self { child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            panic!("smtp-sink.py did not start (first line: {line:?}, read: {read:?}, stderr: {stderr:?}); {INSTALL_HINT}");
        }

        fn url(&self) -> String {
            format!("smtp://127.0.0.1:{}", self.port)
        }

        /// SIGKILL, and wait until it is gone (its port is free again).
        fn kill(mut self) {
            self.stop();
        }

        fn stop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Drop for Sink {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// The message as Python's `email` package reads it (an independent parser).
    fn parse_with_python(message: &[u8]) -> serde_json::Value {
        const SCRIPT: &str = r#"
import sys, json, email, email.policy
m = email.message_from_binary_file(sys.stdin.buffer, policy=email.policy.default)
out = {"subject": str(m["subject"]), "from": str(m["from"]), "to": str(m["to"]), "message_id": str(m["message-id"]),
       "date": str(m["date"]), "mime_version": str(m["mime-version"]), "content_type": m.get_content_type(),
       "defects": [repr(d) for d in m.defects], "text": None, "charset": None, "attachments": []}
for part in m.walk():
    if part.is_multipart():
        continue
    out["defects"] += [repr(d) for d in part.defects]
    if part.get_content_disposition() == "attachment":
        out["attachments"].append({"filename": part.get_filename(), "content_type": part.get_content_type(),
                                   "cte": str(part["content-transfer-encoding"]), "hex": part.get_payload(decode=True).hex()})
    elif part.get_content_type() == "text/plain" and out["text"] is None:
        out["text"] = part.get_content().replace("\r\n", "\n")
        out["charset"] = part.get_content_charset()
print(json.dumps(out))
"#;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {INSTALL_HINT}"));
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "python could not parse the message: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn pdf_bytes() -> Vec<u8> {
        let mut bytes = b"%PDF-1.7\n".to_vec();
        bytes.extend((0..=255u8).cycle().take(3000));
        bytes
    }

    fn email() -> Email {
        Email {
            message_id: "order-42.confirmation@usher.test".into(),
            from: "Usher Tickets <tickets@usher.test>".into(),
            to: "Zoë Ångström <zoe@example.org>".into(),
            subject: "Vos billets pour « Café Müller » — 2 places 🎟".into(),
            text: "Bonjour Zoë,\n\nvoici vos billets.\n.\nA line that starts with a dot, and one long enough to need folding: ".to_owned()
                + &"ü".repeat(120)
                + "\n",
            attachments: vec![Attachment { filename: "tickets-42.pdf".into(), content_type: "application/pdf".into(), bytes: pdf_bytes() }],
            trace: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }
    }

    /// Every field of `email` survives the trip, as Python reads it.
    fn assert_round_trip(parsed: &serde_json::Value, email: &Email) {
        assert_eq!(parsed["defects"], serde_json::json!([]), "{parsed}");
        assert_eq!(parsed["subject"], email.subject.as_str());
        assert_eq!(parsed["from"], email.from.as_str());
        assert_eq!(parsed["to"], email.to.as_str());
        assert_eq!(parsed["message_id"], format!("<{}>", email.message_id));
        assert_eq!(parsed["mime_version"], "1.0");
        assert!(!parsed["date"].as_str().unwrap().is_empty() && parsed["date"] != "None", "{parsed}");
        assert_eq!(parsed["text"], email.text.as_str());
        assert_eq!(parsed["charset"], "utf-8");
        let attachments = parsed["attachments"].as_array().unwrap();
        assert_eq!(attachments.len(), email.attachments.len(), "{parsed}");
        for (got, want) in attachments.iter().zip(&email.attachments) {
            assert_eq!(got["filename"], want.filename.as_str());
            assert_eq!(got["content_type"], want.content_type.as_str());
            assert_eq!(got["cte"], "base64");
            assert_eq!(got["hex"], hex(&want.bytes));
        }
        let expected_type = if email.attachments.is_empty() { "text/plain" } else { "multipart/mixed" };
        assert_eq!(parsed["content_type"], expected_type);
    }

    fn headers(message: &[u8]) -> String {
        let text = String::from_utf8(message.to_vec()).unwrap();
        text.split("\r\n\r\n").next().unwrap().to_owned()
    }

    fn files_in(dir: &Path, ext: Option<&str>) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| ext.is_none_or(|ext| p.extension().is_some_and(|e| e == ext)))
            .collect();
        files.sort();
        files
    }

    /// A port where nothing listens (bound, then released).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn build_message_writes_the_headers_and_encodes_what_is_not_ascii() {
        let email = email();
        let message = build_message(&email).unwrap();
        assert!(message.is_ascii(), "8-bit bytes in the message");
        let head = headers(&message);
        assert!(head.contains("Message-ID: <order-42.confirmation@usher.test>\r\n"), "{head}");
        assert!(head.contains("\r\nDate: "), "{head}");
        assert!(head.contains("From: \"Usher Tickets\" <tickets@usher.test>\r\n"), "{head}");
        assert!(head.contains("\r\nTo: =?utf-8?"), "{head}");
        let subject = head.split("\r\nSubject: ").nth(1).unwrap().split("\r\nMIME").next().unwrap();
        assert!(subject.contains("=?utf-8?") && subject.is_ascii(), "non-ASCII subject must be RFC 2047-encoded: {head}");
        assert!(head.contains("MIME-Version: 1.0\r\n"), "{head}");
        assert!(head.contains("Content-Type: multipart/mixed;"), "{head}");
        let text = String::from_utf8(message.clone()).unwrap();
        assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\n"), "{text}");
        assert!(text.contains("Content-Disposition: attachment; filename=\"tickets-42.pdf\"\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/pdf\r\n"), "{text}");
        assert!(text.contains("Content-Transfer-Encoding: base64\r\n"), "{text}");
        assert!(text.contains("JVBERi0xLjcKAAECAwQFBgc"), "the PDF's first bytes in base64: {text}");
        assert_round_trip(&parse_with_python(&message), &email);
    }

    #[test]
    fn build_message_without_attachments_is_one_text_part() {
        let email = Email { attachments: vec![], subject: "Plain ASCII subject".into(), to: "zoe@example.org".into(), ..email() };
        let message = build_message(&email).unwrap();
        let head = headers(&message);
        assert!(head.contains("Subject: Plain ASCII subject\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/plain; charset=utf-8\r\n"), "{head}");
        assert!(!head.contains("multipart"), "{head}");
        assert_round_trip(&parse_with_python(&message), &email);
    }

    #[test]
    fn build_message_attachments_are_base64_whatever_their_type_and_keep_non_ascii_names() {
        let attachments = vec![
            Attachment { filename: "notes.txt".into(), content_type: "text/plain; charset=utf-8".into(), bytes: b"plain ascii\n".to_vec() },
            Attachment { filename: "reçu été.pdf".into(), content_type: "application/pdf".into(), bytes: pdf_bytes() },
        ];
        let email = Email { attachments, ..email() };
        let message = build_message(&email).unwrap();
        let text = String::from_utf8(message.clone()).unwrap();
        // Both attachments, and the text part too (it is not ASCII).
        assert_eq!(text.matches("Content-Transfer-Encoding: base64\r\n").count(), 3, "{text}");
        let mut parsed = parse_with_python(&message);
        // Python reports the parameters apart; compare the bare type.
        parsed["attachments"][0]["content_type"] = "text/plain; charset=utf-8".into();
        assert_round_trip(&parsed, &email);
    }

    #[test]
    fn build_message_refuses_bad_addresses_and_ids_for_good() {
        let cases = [
            (Email { from: "not an address".into(), ..email() }, "From"),
            (Email { to: "zoe.example.org".into(), ..email() }, "To"),
            (Email { to: "".into(), ..email() }, "To"),
            (Email { message_id: "no-at-sign".into(), ..email() }, "Message-ID"),
            (Email { message_id: "a@b\r\nBcc: x@y".into(), ..email() }, "Message-ID"),
        ];
        for (email, field) in cases {
            match build_message(&email) {
                Err(MailError::Permanent(msg)) => assert!(msg.contains(field), "{field}: {msg}"),
                other => panic!("{field}: expected Permanent, got {other:?}"),
            }
        }
        let bad_type =
            Email { attachments: vec![Attachment { filename: "x".into(), content_type: "not a type".into(), bytes: vec![1] }], ..email() };
        assert!(matches!(build_message(&bad_type), Err(MailError::Permanent(m)) if m.contains("content type")));
        assert!(
            headers(&build_message(&email()).unwrap()).contains("Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n")
        );
        let forged = Email { trace: Some("00-x\r\nBcc: a@b".into()), ..email() };
        assert!(!headers(&build_message(&forged).unwrap()).contains("Bcc"));
        let bracketed = Email { message_id: "<a.b@c>".into(), ..email() };
        assert!(headers(&build_message(&bracketed).unwrap()).contains("Message-ID: <a.b@c>\r\n"));
    }

    #[tokio::test]
    async fn maildir_delivers_one_complete_file_into_new() {
        let root = TempDir::new();
        let dir = root.0.join("Maildir");
        let mailer = MaildirMailer::new(&dir);
        assert_eq!(mailer.describe(), format!("maildir {}", dir.display()));
        let email = email();
        mailer.send(&email).await.unwrap();

        let new = files_in(&dir.join("new"), None);
        assert_eq!(new.len(), 1, "{new:?}");
        assert!(files_in(&dir.join("tmp"), None).is_empty());
        assert!(files_in(&dir.join("cur"), None).is_empty());
        let bytes = std::fs::read(&new[0]).unwrap();
        assert!(!bytes.contains(&b'\r'), "maildir files have LF line endings");
        assert_round_trip(&parse_with_python(&bytes), &email);

        mailer.send(&email).await.unwrap();
        let new = files_in(&dir.join("new"), None);
        assert_eq!(new.len(), 2, "a second delivery is a second file: {new:?}");
        assert!(files_in(&dir.join("tmp"), None).is_empty());
    }

    #[tokio::test]
    async fn maildir_io_errors_are_transient_and_bad_addresses_permanent() {
        let root = TempDir::new();
        let file = root.0.join("a-file");
        std::fs::write(&file, b"not a directory").unwrap();
        match MaildirMailer::new(&file).send(&email()).await {
            Err(MailError::Transient(msg)) => assert!(msg.contains("a-file"), "{msg}"),
            other => panic!("expected Transient, got {other:?}"),
        }
        let mailer = MaildirMailer::new(root.0.join("Maildir"));
        let bad = Email { to: "nobody".into(), ..email() };
        assert!(matches!(mailer.send(&bad).await, Err(MailError::Permanent(_))));
    }

    #[test]
    fn smtp_urls() {
        let ok = [
            ("smtp://127.0.0.1:2525", "smtp://127.0.0.1:2525"),
            ("smtp://mail.example.org", "smtp://mail.example.org:25"),
            ("smtp://user:p%40ss@relay.local:587/usher.example", "smtp://relay.local:587"),
            ("smtp://[::1]:2525", "smtp://[::1]:2525"),
        ];
        for (url, described) in ok {
            let mailer = SmtpMailer::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(mailer.describe(), described);
            assert!(!format!("{mailer:?}").contains("p@ss") && !format!("{mailer:?}").contains("p%40ss"));
        }
        let refused = [
            ("smtps://relay.local:465", "TLS"),
            ("smtp://relay.local:587?tls=required", "TLS"),
            ("http://relay.local", "scheme"),
            ("smtp://:25", ""),
            ("relay.local:25", ""),
            ("not a url", ""),
        ];
        for (url, needle) in refused {
            match SmtpMailer::from_url(url) {
                Err(e) => assert!(e.to_string().contains(needle), "{url}: {e}"),
                Ok(m) => panic!("{url}: accepted as {}", m.describe()),
            }
        }
    }

    #[tokio::test]
    async fn smtp_delivers_to_a_real_server_with_the_attachment() {
        let inbox = TempDir::new();
        let sink = Sink::start(&inbox.0, 0, &[]).await;
        let mailer = SmtpMailer::from_url(&sink.url()).unwrap();
        let email = email();
        mailer.send(&email).await.unwrap();

        let received = files_in(&inbox.0, Some("eml"));
        assert_eq!(received.len(), 1, "{received:?}");
        let bytes = std::fs::read(&received[0]).unwrap();
        assert_round_trip(&parse_with_python(&bytes), &email);
        assert!(files_in(&inbox.0, None).len() == 1, "no temporary file left");
        sink.kill();
    }

    #[tokio::test]
    async fn smtp_maps_5xx_to_permanent_and_4xx_to_transient() {
        let inbox = TempDir::new();
        let sink = Sink::start(&inbox.0, 0, &[]).await;
        let mailer = SmtpMailer::from_url(&sink.url()).unwrap();
        match mailer.send(&Email { to: "permfail@example.org".into(), ..email() }).await {
            Err(MailError::Permanent(msg)) => assert!(msg.contains("550") && msg.contains(&sink.url()), "{msg}"),
            other => panic!("expected Permanent, got {other:?}"),
        }
        match mailer.send(&Email { to: "tempfail@example.org".into(), ..email() }).await {
            Err(MailError::Transient(msg)) => assert!(msg.contains("451"), "{msg}"),
            other => panic!("expected Transient, got {other:?}"),
        }
        assert!(files_in(&inbox.0, Some("eml")).is_empty());
        sink.kill();
    }

    #[tokio::test]
    async fn smtp_authenticates_with_the_url_credentials() {
        let inbox = TempDir::new();
        let sink = Sink::start(&inbox.0, 0, &["--auth", "usher:p@ss word"]).await;
        let good = SmtpMailer::from_url(&format!("smtp://usher:p%40ss%20word@127.0.0.1:{}", sink.port)).unwrap();
        good.send(&email()).await.unwrap();
        assert_eq!(files_in(&inbox.0, Some("eml")).len(), 1);

        let wrong = SmtpMailer::from_url(&format!("smtp://usher:nope@127.0.0.1:{}", sink.port)).unwrap();
        let r = wrong.send(&email()).await;
        assert!(matches!(&r, Err(MailError::Permanent(m)) if m.contains("535")), "{r:?}");
        let anonymous = SmtpMailer::from_url(&sink.url()).unwrap();
        let r = anonymous.send(&email()).await;
        assert!(matches!(&r, Err(MailError::Permanent(m)) if m.contains("530")), "{r:?}");
        assert_eq!(files_in(&inbox.0, Some("eml")).len(), 1);
        sink.kill();
    }

    #[tokio::test]
    async fn smtp_to_a_closed_port_is_transient_at_once() {
        let mailer = SmtpMailer::from_url(&format!("smtp://127.0.0.1:{}", closed_port())).unwrap();
        let started = Instant::now();
        match mailer.send(&email()).await {
            Err(MailError::Transient(msg)) => assert!(msg.to_lowercase().contains("connect"), "{msg}"),
            other => panic!("expected Transient, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn smtp_to_a_server_that_never_answers_is_transient_after_the_deadline() {
        // Accepts the connection, then says nothing (no greeting).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mailer = SmtpMailer::from_url(&format!("smtp://127.0.0.1:{port}"))
            .unwrap()
            .with_timeouts(Duration::from_secs(1), Duration::from_millis(1500));
        let started = Instant::now();
        match mailer.send(&email()).await {
            Err(MailError::Transient(msg)) => assert!(msg.contains("no answer"), "{msg}"),
            other => panic!("expected Transient, got {other:?}"),
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(5), "took {took:?}");
        held.abort();
    }

    #[tokio::test]
    async fn smtp_outage_is_transient_and_sending_resumes_when_the_server_is_back() {
        let inbox = TempDir::new();
        let sink = Sink::start(&inbox.0, 0, &[]).await;
        let port = sink.port;
        let mailer = SmtpMailer::from_url(&sink.url()).unwrap().with_timeouts(Duration::from_secs(2), Duration::from_secs(10));
        mailer.send(&email()).await.unwrap();

        sink.kill();
        assert!(matches!(mailer.send(&email()).await, Err(MailError::Transient(_))));

        let sink = Sink::start(&inbox.0, port, &[]).await;
        assert_eq!(sink.port, port, "restarted on the same port");
        mailer.send(&email()).await.unwrap();
        assert_eq!(files_in(&inbox.0, Some("eml")).len(), 2);
        sink.kill();
    }
}
