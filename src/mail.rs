//! Outgoing email: renders an order's confirmation or refund from the templates in
//! templates/ (minijinja, compiled into the binary) as MIME multipart/alternative, text and
//! HTML, and hands it to one back end: SMTP (lettre, pooled), `.eml` files (development) or
//! memory (tests). When to send and how often to retry is the MailerActor's business, never
//! this module's: one call composes and delivers one message.
//!
//! `KASSA_SMTP_URL`: `smtp://host[:port]` speaks STARTTLS when the server offers it
//! (`?tls=required` insists on it, `?tls=none` never tries; default port 587, or 25 with
//! `tls=none`), `smtps://host[:port]` is TLS from the first byte (default port 465),
//! `file://dir` writes files. Credentials come from the URL (`smtps://user:pass@host`) or
//! else from `KASSA_SMTP_USER` / `KASSA_SMTP_PASSWORD`.

use crate::config::Config;
use anyhow::Context as _;
use async_trait::async_trait;
use kassa_actors::domain::OrderId;
use kassa_actors::domain::format_money;
use kassa_actors::mailer::{MailTransport, SendError};
use kassa_actors::store::{EmailKind, OrderRecord, OutboxEmail};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use reqwest::Url;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How long one SMTP conversation may take before it counts as a (transient) failure.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pooled SMTP connections: as many as the mailer sends at once.
const SMTP_POOL_SIZE: u32 = 4;
/// An idle pooled connection is closed after this long.
const SMTP_IDLE: Duration = Duration::from_secs(60);

/// The templates, by name, embedded so the binary is self-contained.
const TEMPLATES: [(&str, &str); 9] = [
    ("layout.html", include_str!("../templates/layout.html")),
    ("_lines.html", include_str!("../templates/_lines.html")),
    ("_lines.txt", include_str!("../templates/_lines.txt")),
    (
        "_shipping.html",
        include_str!("../templates/_shipping.html"),
    ),
    ("_shipping.txt", include_str!("../templates/_shipping.txt")),
    (
        "confirmation.html",
        include_str!("../templates/confirmation.html"),
    ),
    (
        "confirmation.txt",
        include_str!("../templates/confirmation.txt"),
    ),
    ("refund.html", include_str!("../templates/refund.html")),
    ("refund.txt", include_str!("../templates/refund.txt")),
];

/// The Message-ID of an order's email of `kind`: the same on every attempt, so a resend is
/// recognisably the same message.
pub fn message_id(order_id: OrderId, kind: EmailKind) -> String {
    format!("<{order_id}.{}@kassa>", kind.as_str())
}

/// A message the memory back end kept.
#[derive(Debug, Clone)]
pub struct SentEmail {
    /// The envelope recipients.
    pub to: Vec<String>,
    /// The message as it would go on the wire.
    pub raw: Vec<u8>,
}

/// Where messages go.
pub enum EmailBackend {
    /// An SMTP server, connections pooled.
    Smtp(SmtpBackend),
    /// One `<order id>.<kind>.eml` file per email in a directory (development); a resend
    /// replaces its file.
    Files(MailDir),
    /// Kept in memory (unit tests).
    Memory(Arc<Mutex<Vec<SentEmail>>>),
}

/// lettre's pooled SMTP transport. Its pool spawns tokio tasks, even when dropped, so it is
/// dropped inside the runtime it was built on, wherever its last owner goes away.
pub struct SmtpBackend {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    runtime: tokio::runtime::Handle,
}

impl Drop for SmtpBackend {
    fn drop(&mut self) {
        let _inside = self.runtime.enter();
        drop(self.transport.take());
    }
}

impl EmailBackend {
    /// The back end `KASSA_SMTP_URL` names. SMTP needs a tokio runtime (its pool runs there).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let url = config.smtp_url.as_str();
        if let Some(dir) = url.strip_prefix("file://") {
            tracing::info!(
                dir,
                "emails are written to files (KASSA_SMTP_URL=file://...)"
            );
            return Ok(Self::Files(MailDir::new(PathBuf::from(dir))?));
        }
        let credentials = match (&config.smtp_user, &config.smtp_password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.clone())),
            _ => None,
        };
        Self::smtp(url, credentials).context("KASSA_SMTP_URL")
    }

    /// An SMTP back end for `url`; `credentials` are used unless the URL carries its own.
    pub fn smtp(url: &str, credentials: Option<Credentials>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("the SMTP back end must be built inside a tokio runtime")?;
        let mut parsed = Url::parse(url).context("not a URL")?;
        let tls = parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        // lettre reads `tls=required|opportunistic` itself; without it, plain.
        let tls = match (parsed.scheme(), tls.as_deref()) {
            ("smtp", None) => Some("opportunistic"),
            ("smtp", Some("none")) => None,
            ("smtp", Some("opportunistic")) => Some("opportunistic"),
            ("smtp", Some("required")) => Some("required"),
            ("smtps", None) => None,
            _ => anyhow::bail!(
                "expected smtp://host[:port][?tls=opportunistic|required|none] or smtps://host[:port], got `{url}`"
            ),
        };
        let others: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, _)| k != "tls")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parsed.set_query(None);
        if tls.is_some() || !others.is_empty() {
            let mut query = parsed.query_pairs_mut();
            query.extend_pairs(others);
            if let Some(tls) = tls {
                query.append_pair("tls", tls);
            }
        }
        let url_has_credentials = parsed.password().is_some();
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(parsed.as_str())
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .timeout(Some(SMTP_TIMEOUT))
            .pool_config(
                PoolConfig::new()
                    .max_size(SMTP_POOL_SIZE)
                    .idle_timeout(SMTP_IDLE),
            );
        if !url_has_credentials && let Some(credentials) = credentials {
            builder = builder.credentials(credentials);
        }
        let transport = {
            let _inside = runtime.enter();
            builder.build()
        };
        let tls_mode = match (parsed.scheme(), tls) {
            ("smtps", _) => "implicit",
            (_, Some(starttls)) => starttls,
            (_, None) => "none",
        };
        tracing::info!(
            host = parsed.host_str().unwrap_or_default(),
            port = ?parsed.port(),
            tls = tls_mode,
            "emails are sent over SMTP"
        );
        Ok(Self::Smtp(SmtpBackend {
            transport: Some(transport),
            runtime,
        }))
    }

    pub fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// What the memory back end kept (empty for the others).
    pub fn sent(&self) -> Vec<SentEmail> {
        match self {
            Self::Memory(sent) => sent.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            Self::Smtp(_) | Self::Files(_) => Vec::new(),
        }
    }

    async fn deliver(&self, message: Message, file_name: &str) -> Result<(), SendError> {
        match self {
            Self::Smtp(smtp) => {
                let Some(transport) = &smtp.transport else {
                    return Err(SendError::Transient("the SMTP transport is closed".into()));
                };
                transport.send(message).await.map(drop).map_err(|e| {
                    if e.is_permanent() {
                        SendError::Permanent(e.to_string())
                    } else {
                        SendError::Transient(e.to_string())
                    }
                })
            }
            Self::Files(dir) => dir
                .write(file_name, message.formatted())
                .await
                .map_err(|e| SendError::Transient(format!("{}: {e}", dir.path().display()))),
            Self::Memory(sent) => {
                let to = message
                    .envelope()
                    .to()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let raw = message.formatted();
                sent.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(SentEmail { to, raw });
                Ok(())
            }
        }
    }
}

/// The dev-mail directory and the one thread that writes into it. Files created from many
/// blocking-pool threads at once contend for the directory's lock: in a webhook storm that
/// spinning (and ext4's inode allocation under it) took half of Kassa's CPU. One thread
/// writing them in turn has no contention and wakes once per burst.
pub struct MailDir {
    dir: PathBuf,
    writes: std::sync::mpsc::Sender<EmlWrite>,
}

struct EmlWrite {
    name: String,
    bytes: Vec<u8>,
    done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
}

impl MailDir {
    /// Starts the writer thread; it ends when the `MailDir` is dropped and its queue is done.
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        let (writes, queue) = std::sync::mpsc::channel::<EmlWrite>();
        let target = dir.clone();
        std::thread::Builder::new()
            .name("kassa-dev-mail".into())
            .spawn(move || {
                for write in queue {
                    let written = write_eml(&target, &write.name, &write.bytes);
                    // The sender may have stopped waiting; the file is written all the same.
                    let _ = write.done.send(written);
                }
            })?;
        Ok(Self { dir, writes })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    async fn write(&self, name: &str, bytes: Vec<u8>) -> std::io::Result<()> {
        let (done, written) = tokio::sync::oneshot::channel();
        let write = EmlWrite {
            name: name.to_string(),
            bytes,
            done,
        };
        let stopped = || std::io::Error::other("the dev-mail writer thread stopped");
        self.writes.send(write).map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
    }
}

/// Writes the file whole or not at all (a reader never sees half a message).
fn write_eml(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// An email's words, ready to wrap in MIME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// What the templates see: everything already formatted for display.
#[derive(Serialize)]
struct EmailView<'a> {
    order_id: String,
    order_number: String,
    lines: Vec<LineView<'a>>,
    total: String,
    currency: &'static str,
    shipping: ShippingView<'a>,
}

#[derive(Serialize)]
struct ShippingView<'a> {
    name: &'a str,
    line1: &'a str,
    line2: Option<&'a str>,
    city: &'a str,
    postal_code: &'a str,
    country: &'a str,
}

#[derive(Serialize)]
struct LineView<'a> {
    sku: &'a str,
    name: &'a str,
    quantity: u32,
    unit_price: String,
    line_total: String,
}

impl<'a> EmailView<'a> {
    fn of(order: &'a OrderRecord) -> Self {
        let money = |amount: i64| format_money(amount, order.currency);
        Self {
            order_id: order.id.to_string(),
            order_number: order.id.number(),
            lines: order
                .lines
                .iter()
                .map(|line| LineView {
                    sku: line.sku.as_str(),
                    name: &line.name,
                    quantity: line.quantity,
                    unit_price: money(line.unit_price),
                    line_total: money(line.unit_price.saturating_mul(i64::from(line.quantity))),
                })
                .collect(),
            total: money(order.total),
            currency: order.currency.code(),
            shipping: ShippingView {
                name: &order.shipping.name,
                line1: &order.shipping.line1,
                line2: order.shipping.line2.as_deref(),
                city: &order.shipping.city,
                postal_code: &order.shipping.postal_code,
                country: &order.shipping.country,
            },
        }
    }
}

/// The email templates, parsed once. `.html` templates HTML-escape every value.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(true)
                .build()?,
        );
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(Self { env })
    }

    pub fn render(
        &self,
        kind: EmailKind,
        order: &OrderRecord,
    ) -> Result<RenderedEmail, minijinja::Error> {
        let view = minijinja::Value::from(Serde(EmailView::of(order)));
        let render = |ext: &str| {
            self.env
                .get_template(&format!("{}.{ext}", kind.as_str()))?
                .render(view.clone())
        };
        let short = order.id.number();
        Ok(RenderedEmail {
            subject: match kind {
                EmailKind::Confirmation => format!("Your order {short} is confirmed"),
                EmailKind::Refund => format!("Your order {short} has been refunded"),
            },
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

/// The `MailTransport` the MailerActor uses: composes from templates, delivers through the
/// back end.
pub struct Emails {
    backend: EmailBackend,
    templates: Templates,
    from: Mailbox,
}

impl Emails {
    pub fn new(backend: EmailBackend, from: &str) -> anyhow::Result<Self> {
        Ok(Self {
            backend,
            templates: Templates::new().context("email templates")?,
            from: from
                .parse()
                .with_context(|| format!("KASSA_MAIL_FROM: `{from}` is not an email address"))?,
        })
    }

    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        Self::new(EmailBackend::from_config(config)?, &config.mail_from)
    }

    pub fn backend(&self) -> &EmailBackend {
        &self.backend
    }

    /// The MIME message for `email`, rendered from its order. Only the order and the outbox
    /// entry go in, so every attempt yields the same message (the Date is when it was queued).
    pub fn compose(&self, email: &OutboxEmail, order: &OrderRecord) -> Result<Message, SendError> {
        let to: Mailbox = email.to.parse().map_err(|e| {
            SendError::Permanent(format!("`{}` is not an email address: {e}", email.to))
        })?;
        let rendered = self
            .templates
            .render(email.kind, order)
            .map_err(|e| SendError::Permanent(format!("cannot render the email: {e:#}")))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(message_id(order.id, email.kind)))
            .date(SystemTime::from(email.created_at))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))
    }
}

#[async_trait]
impl MailTransport for Emails {
    async fn send(&self, email: &OutboxEmail, order: &OrderRecord) -> Result<(), SendError> {
        let message = self.compose(email, order)?;
        let file_name = format!("{}.{}.eml", email.order_id, email.kind.as_str());
        self.backend.deliver(message, &file_name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kassa_actors::domain::{CartId, Currency, Sku, UserId};
    use kassa_actors::order::OrderStatus;
    use kassa_actors::store::{OrderLine, ShippingDetails};
    use time::macros::datetime;

    fn order() -> OrderRecord {
        let at = datetime!(2026-03-01 12:00 UTC);
        OrderRecord {
            id: OrderId::parse("0195f3a4-1b2c-7d3e-8f40-123456789abc").expect("uuid"),
            owner: UserId("alice".into()),
            cart_id: CartId::new(),
            lines: vec![
                OrderLine {
                    sku: Sku::parse("tee-m").expect("sku"),
                    name: "T-shirt <M> & \"friends\"".into(),
                    quantity: 2,
                    unit_price: 1999,
                },
                OrderLine {
                    sku: Sku::parse("mug").expect("sku"),
                    name: "Mug".into(),
                    quantity: 1,
                    unit_price: 850,
                },
            ],
            total: 2 * 1999 + 850,
            currency: Currency::EUR,
            shipping: ShippingDetails {
                name: "Alice <script>alert(1)</script> Doe".into(),
                line1: "1 Main St".into(),
                line2: Some("Flat 2".into()),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
                email: None,
            },
            email: "alice@example.com".into(),
            status: OrderStatus::Processing,
            payment: None,
            settled_payment_id: None,
            created_at: at,
            updated_at: at,
            expires_at: at,
            history: Vec::new(),
            pending_effects: Vec::new(),
            seen_webhooks: Vec::new(),
            version: 2,
        }
    }

    fn outbox(order: &OrderRecord, kind: EmailKind) -> OutboxEmail {
        OutboxEmail {
            order_id: order.id,
            kind,
            to: order.email.clone(),
            created_at: order.updated_at,
            attempts: 0,
            next_attempt_at: order.updated_at,
            last_error: None,
            sent_at: None,
            claimed_by: None,
        }
    }

    #[test]
    fn the_confirmation_lists_every_line_the_total_and_the_address() {
        let order = order();
        let email = Templates::new()
            .expect("templates")
            .render(EmailKind::Confirmation, &order)
            .expect("render");
        assert_eq!(
            email.subject,
            format!(
                "Your order {} is confirmed",
                OrderId::parse("0195f3a4-1b2c-7d3e-8f40-123456789abc")
                    .expect("uuid")
                    .number()
            )
        );
        for part in [&email.text, &email.html] {
            assert!(
                part.contains("0195f3a4-1b2c-7d3e-8f40-123456789abc"),
                "{part}"
            );
            assert!(
                part.contains("19.99 EUR") && part.contains("39.98 EUR"),
                "{part}"
            );
            assert!(
                part.contains("8.50 EUR") && part.contains("48.48 EUR"),
                "{part}"
            );
            for field in ["1 Main St", "Flat 2", "10115", "Berlin", "DE"] {
                assert!(part.contains(field), "{field} missing: {part}");
            }
        }
        assert!(
            email
                .text
                .contains("2 x T-shirt <M> & \"friends\" at 19.99 EUR: 39.98 EUR"),
            "{}",
            email.text
        );
        assert!(email.text.contains("1 x Mug at 8.50 EUR: 8.50 EUR"));
        assert!(
            email
                .text
                .contains("Total: 48.48 EUR\n\nShipping to:\nAlice"),
            "{}",
            email.text
        );
        assert!(
            email
                .text
                .ends_with("DE\n\nOrder 0195f3a4-1b2c-7d3e-8f40-123456789abc\n"),
            "{}",
            email.text
        );
    }

    #[test]
    fn html_escapes_everything_the_shopper_wrote() {
        let email = Templates::new()
            .expect("templates")
            .render(EmailKind::Confirmation, &order())
            .expect("render");
        assert!(!email.html.contains("<script>"), "{}", email.html);
        assert!(
            email
                .html
                .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
        );
        assert!(
            email
                .html
                .contains("T-shirt &lt;M&gt; &amp; &quot;friends&quot;")
        );
    }

    #[test]
    fn the_total_uses_the_currency_exponent() {
        let mut order = order();
        order.currency = Currency::JPY;
        order.lines.truncate(1);
        order.lines[0].unit_price = 1500;
        order.total = 3000;
        let email = Templates::new()
            .expect("templates")
            .render(EmailKind::Confirmation, &order)
            .expect("render");
        assert!(email.text.contains("Total: 3000 JPY"), "{}", email.text);
    }

    #[test]
    fn the_refund_email_names_the_order_and_its_lines() {
        let email = Templates::new()
            .expect("templates")
            .render(EmailKind::Refund, &order())
            .expect("render");
        assert_eq!(
            email.subject,
            format!(
                "Your order {} has been refunded",
                OrderId::parse("0195f3a4-1b2c-7d3e-8f40-123456789abc")
                    .expect("uuid")
                    .number()
            )
        );
        assert!(email.text.contains("refunded your payment"));
        assert!(email.text.contains("Total: 48.48 EUR"));
        assert!(email.html.contains("0195f3a4-1b2c-7d3e-8f40-123456789abc"));
    }

    #[tokio::test]
    async fn the_message_is_multipart_alternative_with_a_stable_message_id() {
        let emails =
            Emails::new(EmailBackend::memory(), "Kassa <orders@shop.example>").expect("emails");
        let order = order();
        let email = outbox(&order, EmailKind::Confirmation);
        emails.send(&email, &order).await.expect("sent");
        emails.send(&email, &order).await.expect("sent again");
        let sent = emails.backend().sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].to, vec!["alice@example.com".to_string()]);
        let raw = String::from_utf8(sent[0].raw.clone()).expect("ascii");
        assert!(
            raw.contains("From: Kassa <orders@shop.example>\r\n"),
            "{raw}"
        );
        assert!(raw.contains("To: alice@example.com\r\n"), "{raw}");
        assert!(raw.contains(&format!(
            "Subject: Your order {} is confirmed\r\n",
            OrderId::parse("0195f3a4-1b2c-7d3e-8f40-123456789abc").expect("uuid").number()
        )));
        assert!(
            raw.contains(
                "Message-ID: <0195f3a4-1b2c-7d3e-8f40-123456789abc.confirmation@kassa>\r\n"
            )
        );
        assert!(
            raw.contains("Date: Sun, 01 Mar 2026 12:00:00 +0000\r\n"),
            "{raw}"
        );
        assert!(raw.contains("Content-Type: multipart/alternative;"));
        assert!(raw.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(raw.contains("Content-Type: text/html; charset=utf-8"));
        let again = String::from_utf8(sent[1].raw.clone()).expect("ascii");
        let headers = |m: &str| m.split("\r\n\r\n").next().map(str::to_string);
        assert_eq!(
            headers(&raw).map(|h| h.lines().filter(|l| l.starts_with("Message-ID")).count()),
            Some(1)
        );
        assert!(
            again.contains(
                "Message-ID: <0195f3a4-1b2c-7d3e-8f40-123456789abc.confirmation@kassa>\r\n"
            )
        );
    }

    #[tokio::test]
    async fn an_unusable_recipient_is_a_permanent_failure() {
        let emails = Emails::new(EmailBackend::memory(), "orders@shop.example").expect("emails");
        let order = order();
        let mut email = outbox(&order, EmailKind::Confirmation);
        email.to = "not an address".into();
        let err = emails.send(&email, &order).await.expect_err("refused");
        assert_eq!(err.kind(), "permanent");
        assert!(emails.backend().sent().is_empty());
    }

    #[test]
    fn an_invalid_sender_stops_start_up() {
        let err = Emails::new(EmailBackend::memory(), "kassa at localhost")
            .err()
            .expect("refused");
        assert!(err.to_string().contains("KASSA_MAIL_FROM"), "{err}");
    }

    #[tokio::test]
    async fn dev_mail_is_one_file_per_email_and_a_resend_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let emails = Emails::new(
            EmailBackend::Files(MailDir::new(dir.path().join("mail")).expect("thread")),
            "orders@shop.example",
        )
        .expect("emails");
        let order = order();
        let email = outbox(&order, EmailKind::Confirmation);
        emails.send(&email, &order).await.expect("sent");
        emails.send(&email, &order).await.expect("sent again");
        let files: Vec<_> = std::fs::read_dir(dir.path().join("mail"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        assert_eq!(
            files,
            vec!["0195f3a4-1b2c-7d3e-8f40-123456789abc.confirmation.eml".to_string()]
        );
    }

    #[tokio::test]
    async fn smtp_urls_are_checked_at_start_up() {
        for ok in [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example:587?tls=required",
            "smtp://mail.example?tls=none",
            "smtps://user:p%40ss@mail.example",
        ] {
            assert!(EmailBackend::smtp(ok, None).is_ok(), "{ok}");
        }
        for bad in [
            "smtp://",
            "smtps://mail.example?tls=none",
            "imap://mail.example",
        ] {
            assert!(EmailBackend::smtp(bad, None).is_err(), "{bad}");
        }
    }
}
