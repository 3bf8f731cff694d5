//! The hosted payment page the shopper sees at `paymentUrl`: the amount, and Pay and Decline
//! while the payment is pending. It renders a payment as it stands and never changes one;
//! everything interpolated into it is escaped.

use super::ledger::{Payment, state_name};
use kassa_actors::domain::format_money;
use kassa_actors::gateway::PaymentState;

/// The page for `payment`, as HTML.
pub(super) fn render_payment_page(payment: &Payment) -> String {
    let amount = escape_html(&format_money(payment.amount, payment.currency));
    let order_id = escape_html(&payment.order_id.to_string());
    let actions = match payment.state {
        PaymentState::Pending => concat!(
            r#"<form method="post"><input type="hidden" name="outcome" value="success">"#,
            r#"<button type="submit">Pay</button></form>"#,
            "\n",
            r#"<form method="post"><input type="hidden" name="outcome" value="failure">"#,
            r#"<button type="submit" class="decline">Decline</button></form>"#,
        )
        .to_string(),
        decided => format!(
            r#"<p>This payment {}.</p><p><a href="{}">Back to the shop</a></p>"#,
            if payment.cancelled {
                "was cancelled and can no longer be paid".to_string()
            } else {
                format!("has {}", state_name(decided))
            },
            escape_html(&payment.return_url),
        ),
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox payment: {amount}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 28rem; margin: 4rem auto; padding: 0 1rem; }}
form {{ display: inline-block; margin-right: .5rem; }}
button {{ font-size: 1.1rem; padding: .5rem 1.5rem; }}
.decline {{ background: #eee; }}
</style>
</head>
<body>
<main>
<p>Kassa sandbox gateway: no money moves.</p>
<h1>{amount}</h1>
<p>Order {order_id}</p>
{actions}
</main>
</body>
</html>
"#
    )
}

fn escape_html(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{gateway, open, request};
    use super::*;
    use kassa_actors::domain::OrderId;

    #[test]
    fn everything_interpolated_into_the_page_is_escaped() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_decided_page_links_back_without_injecting_the_return_url() {
        let gateway = gateway();
        let mut req = request(OrderId::new(), 100);
        req.return_url = r#"http://shop.test/"><script>alert(1)</script>"#.into();
        let mut payment = open(&gateway, req).expect("opens");
        payment.state = PaymentState::Failed;
        let page = render_payment_page(&payment);
        assert!(!page.contains("<script>"));
        assert!(page.contains("This payment has failed."));
    }
}
