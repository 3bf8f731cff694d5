//! The hosted payment page the shopper sees at `paymentUrl` (templates/sandbox/payment.html,
//! compiled in and parsed at start-up): shop, order, lines, total, time left, Pay and Decline.
//! It renders a payment as it stands and never changes one; every value is HTML-escaped.

use super::ledger::Payment;
use super::{SandboxGateway, is_http_url};
use kassa_actors::domain::display_money;
use kassa_actors::gateway::PaymentState;
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use time::OffsetDateTime;

const TEMPLATE: &str = "sandbox/payment.html";
const SOURCE: &str = include_str!("../../../templates/sandbox/payment.html");

/// The payment page's template, parsed once; `.html` auto-escapes every value.
pub(super) struct PaymentPage {
    env: Environment<'static>,
}

/// What the template is given: everything already in words and formatted money.
#[derive(Serialize)]
struct PageView<'a> {
    heading: String,
    shop_name: &'a str,
    order_number: &'a str,
    lines: Vec<LineView<'a>>,
    total: String,
    /// `pending`, `succeeded`, `declined` or `cancelled`.
    state: &'static str,
    state_in_words: &'static str,
    time_left: Option<String>,
    expired: bool,
    cancel_url: Option<&'a str>,
    return_url: Option<&'a str>,
}

#[derive(Serialize)]
struct LineView<'a> {
    name: &'a str,
    quantity: u32,
    amount: String,
}

impl PaymentPage {
    pub(super) fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        env.add_template(TEMPLATE, SOURCE)?;
        Ok(Self { env })
    }

    /// The page for `payment` as it stands at `now`.
    pub(super) fn render(
        &self,
        payment: &Payment,
        now: OffsetDateTime,
    ) -> Result<String, minijinja::Error> {
        let details = &payment.details;
        let money = |amount| display_money(amount, payment.currency);
        let total = money(payment.amount);
        let (state, heading, state_in_words) = match payment.state {
            PaymentState::Pending => ("pending", format!("Pay {total}"), ""),
            PaymentState::Succeeded => (
                "succeeded",
                "Payment complete".into(),
                "This payment has succeeded. The shop confirms your order.",
            ),
            PaymentState::Failed if payment.cancelled => (
                "cancelled",
                "Payment cancelled".into(),
                "This payment was cancelled by the shop and can no longer be paid.",
            ),
            PaymentState::Failed => (
                "declined",
                "Payment declined".into(),
                "This payment was declined. Nothing was charged.",
            ),
        };
        let remaining = details.expires_at.map(|expires_at| expires_at - now);
        let view = PageView {
            heading,
            shop_name: &details.shop_name,
            order_number: &details.order_number,
            lines: details
                .lines
                .iter()
                .map(|line| LineView {
                    name: &line.name,
                    quantity: line.quantity,
                    amount: money(line.amount),
                })
                .collect(),
            total,
            state,
            state_in_words,
            time_left: remaining.filter(|r| r.is_positive()).map(time_left),
            expired: remaining.is_some_and(|r| !r.is_positive()),
            cancel_url: details.cancel_url.as_deref().filter(|u| is_http_url(u)),
            return_url: Some(payment.return_url.as_str()).filter(|u| is_http_url(u)),
        };
        self.env
            .get_template(TEMPLATE)?
            .render(minijinja::Value::from(Serde(view)))
    }
}

impl SandboxGateway {
    /// The payment page for `payment`, by the sandbox's clock.
    pub(super) fn render_page(&self, payment: &Payment) -> Result<String, minijinja::Error> {
        self.inner.page.render(payment, self.inner.clock.now())
    }
}

/// Whole minutes left, in words: "14 minutes", "1 hour 5 minutes", "less than a minute".
fn time_left(remaining: time::Duration) -> String {
    let minutes = remaining.whole_minutes();
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match (minutes / 60, minutes % 60) {
        (0, 0) => "less than a minute".into(),
        (0, m) => plural(m, "minute"),
        (h, 0) => plural(h, "hour"),
        (h, m) => format!("{} {}", plural(h, "hour"), plural(m, "minute")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::ledger::{PageDetails, PageLine};
    use super::super::test_support::{gateway, open, request};
    use super::*;
    use kassa_actors::domain::{Currency, OrderId};

    fn page() -> PaymentPage {
        PaymentPage::new().expect("the template parses")
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time")
    }

    /// minijinja writes `/` as `&#x2f;`, as a browser reads it back.
    fn unslashed(html: &str) -> String {
        html.replace("&#x2f;", "/")
    }

    fn shown_payment() -> Payment {
        let mut payment = open(&gateway(), request(OrderId::new(), 3599)).expect("opens");
        payment.details = PageDetails {
            shop_name: "Kassa Demo Shop".into(),
            order_number: "K-7F3Q-9D2M".into(),
            lines: vec![
                PageLine {
                    name: "Organic cotton tee".into(),
                    quantity: 1,
                    amount: 1999,
                },
                PageLine {
                    name: "Mug".into(),
                    quantity: 2,
                    amount: 1600,
                },
            ],
            expires_at: Some(now() + time::Duration::seconds(14 * 60 + 59)),
            cancel_url: Some("http://shop.test/checkout/cancel".into()),
        };
        payment
    }

    #[test]
    fn a_pending_page_shows_shop_order_lines_total_time_left_and_the_ways_out() {
        let html = unslashed(&page().render(&shown_payment(), now()).expect("renders"));

        assert_eq!(html.matches("<h1").count(), 1, "{html}");
        assert!(
            html.contains("<h1 id=\"heading\">Pay €35.99</h1>"),
            "{html}"
        );
        for shown in [
            "Kassa Demo Shop",
            "Order K-7F3Q-9D2M",
            "Organic cotton tee",
            "€19.99",
            "€16.00",
            "Time left: 14 minutes",
            "No money moves.",
            r#"<button type="submit" class="pay">Pay</button>"#,
            r#"<button type="submit" class="decline">Decline</button>"#,
            r#"<a href="http://shop.test/checkout/cancel">Cancel and return to the shop</a>"#,
        ] {
            assert!(html.contains(shown), "{shown} missing from {html}");
        }
        assert!(html.contains(r#"name="outcome" value="success""#));
        assert!(html.contains(r#"name="outcome" value="failure""#));
    }

    #[test]
    fn a_page_past_its_time_says_it_expired() {
        let payment = shown_payment();
        let later = now() + time::Duration::minutes(16);
        let html = page().render(&payment, later).expect("renders");
        assert!(html.contains("This payment has expired."), "{html}");
        assert!(!html.contains("Time left"));
    }

    #[test]
    fn a_bare_payment_shows_its_amount_and_buttons_only() {
        let mut payment = open(&gateway(), request(OrderId::new(), 500)).expect("opens");
        payment.currency = Currency::JPY;
        let html = page().render(&payment, now()).expect("renders");
        assert!(html.contains("Pay ¥500"), "{html}");
        assert!(!html.contains("Time left") && !html.contains("Cancel and return"));
        assert!(html.contains(">Pay</button>") && html.contains(">Decline</button>"));
    }

    #[test]
    fn decided_and_cancelled_pages_say_so_and_link_back_without_buttons() {
        for (state, cancelled, words) in [
            (
                PaymentState::Succeeded,
                false,
                "This payment has succeeded.",
            ),
            (PaymentState::Failed, false, "This payment was declined."),
            (
                PaymentState::Failed,
                true,
                "This payment was cancelled by the shop",
            ),
        ] {
            let mut payment = shown_payment();
            payment.state = state;
            payment.cancelled = cancelled;
            let html = unslashed(&page().render(&payment, now()).expect("renders"));
            assert!(html.contains(words), "{words}: {html}");
            assert!(html.contains(r#"<a href="http://shop.test/orders/1">Back to the shop</a>"#));
            assert!(!html.contains("<button") && !html.contains("Cancel and return"));
        }
    }

    #[test]
    fn everything_interpolated_into_the_page_is_escaped() {
        let mut payment = shown_payment();
        payment.details.shop_name = "<script>alert(1)</script>".into();
        payment.details.lines[0].name = r#""><img src=x onerror=alert(1)>"#.into();
        payment.details.cancel_url = Some(r#"http://shop.test/"><script>x</script>"#.into());
        let html = page().render(&payment, now()).expect("renders");
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
        assert!(unslashed(&html).contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn links_are_only_ever_http() {
        let mut payment = shown_payment();
        payment.details.cancel_url = Some("javascript:alert(1)".into());
        payment.return_url = "javascript:alert(2)".into();
        let html = page().render(&payment, now()).expect("renders");
        assert!(!html.contains("javascript:"), "{html}");
        payment.state = PaymentState::Succeeded;
        let html = page().render(&payment, now()).expect("renders");
        assert!(!html.contains("javascript:") && !html.contains("Back to the shop"));
    }

    #[test]
    fn time_left_is_said_in_whole_minutes_and_hours() {
        let said = |secs: i64| time_left(time::Duration::seconds(secs));
        assert_eq!(said(30), "less than a minute");
        assert_eq!(said(60), "1 minute");
        assert_eq!(said(14 * 60 + 59), "14 minutes");
        assert_eq!(said(3600), "1 hour");
        assert_eq!(said(2 * 3600 + 5 * 60), "2 hours 5 minutes");
    }
}
