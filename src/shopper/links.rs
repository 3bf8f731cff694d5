//! The links a shopper follows without logging in: the order page (`/orders/{id}?t=`), its
//! cancel link, the checkout page. The token is an HMAC of the order id under a key derived
//! from the webhook secret, so a link names one order and cannot be forged or guessed.

use base64::Engine as _;
use kassa_actors::domain::OrderId;
use subtle::ConstantTimeEq;

/// Makes and checks the shopper's order links.
#[derive(Clone)]
pub struct OrderLinks {
    key: [u8; 32],
    /// `KASSA_PUBLIC_URL` without its trailing slash.
    public_url: String,
    /// `KASSA_STOREFRONT_URL` when it names another site than Kassa (the storefront's own
    /// order page is then the return URL).
    storefront_url: Option<String>,
}

impl OrderLinks {
    /// `webhook_key`: the webhook signing key's bytes (always configured; never shown).
    pub fn new(webhook_key: &[u8], public_url: &str, storefront_url: &str) -> Self {
        let public_url = public_url.trim_end_matches('/').to_string();
        let storefront_url = storefront_url.trim_end_matches('/');
        Self {
            key: hmac_sha256::HMAC::mac(b"kassa order page links v1", webhook_key),
            storefront_url: (storefront_url != public_url).then(|| storefront_url.to_string()),
            public_url,
        }
    }

    /// The order's status token: 128 bits of HMAC-SHA256, base64url.
    pub fn token(&self, order: OrderId) -> String {
        let mac = hmac_sha256::HMAC::mac(order.0.as_bytes(), self.key);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac[..16])
    }

    /// Whether `token` is the order's (in constant time).
    pub fn verify(&self, order: OrderId, token: &str) -> bool {
        self.token(order).as_bytes().ct_eq(token.as_bytes()).into()
    }

    /// Kassa's own order page for the order.
    pub fn order_page(&self, order: OrderId) -> String {
        format!("{}/orders/{order}?t={}", self.public_url, self.token(order))
    }

    /// Where the gateway sends the shopper back: the storefront's order page when one is
    /// configured, else Kassa's.
    pub fn return_url(&self, order: OrderId) -> String {
        match &self.storefront_url {
            Some(storefront) => format!("{storefront}/orders/{order}"),
            None => self.order_page(order),
        }
    }

    /// The payment page's "Cancel and return to the shop" link: cancels the order, then goes
    /// back to the checkout session it came from (its `cancelUrl`, or the checkout page).
    pub fn cancel_url(&self, order: OrderId, session: Option<&str>) -> String {
        let mut url = format!(
            "{}/orders/{order}/cancel?t={}",
            self.public_url,
            self.token(order)
        );
        if let Some(session) = session {
            url.push_str("&session=");
            url.push_str(session);
        }
        url
    }

    /// The development demo shop.
    pub fn shop_page(&self) -> String {
        format!("{}/", self.public_url)
    }

    /// The hosted checkout page of a session.
    pub fn checkout_page(&self, session: &str) -> String {
        format!("{}/checkout/{session}", self.public_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> OrderLinks {
        OrderLinks::new(b"secret", "http://127.0.0.1:8080/", "http://127.0.0.1:8080")
    }

    #[test]
    fn a_token_opens_its_own_order_only() {
        let (a, b) = (OrderId::new(), OrderId::new());
        let links = links();
        assert!(links.verify(a, &links.token(a)));
        assert!(!links.verify(b, &links.token(a)));
        assert!(!links.verify(a, ""));
        let other_key = OrderLinks::new(b"other", "http://x", "http://x");
        assert!(!links.verify(a, &other_key.token(a)));
    }

    #[test]
    fn the_return_url_is_kassas_order_page_unless_a_storefront_is_configured() {
        let id = OrderId::new();
        assert_eq!(links().return_url(id), links().order_page(id));
        assert!(
            links()
                .order_page(id)
                .starts_with("http://127.0.0.1:8080/orders/")
        );
        let shop = OrderLinks::new(b"secret", "http://kassa", "https://shop.example/");
        assert_eq!(
            shop.return_url(id),
            format!("https://shop.example/orders/{id}")
        );
    }
}
