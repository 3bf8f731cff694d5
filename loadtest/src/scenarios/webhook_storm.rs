//! Webhook storm: N orders placed beforehand (setup, not measured); then each order's
//! payment webhook, signed here with the webhook secret, is delivered k times under one
//! `webhook-id`, all deliveries shuffled, with forgeries mixed in that claim the opposite
//! outcome (signed with the wrong key, a tampered body under a genuine id and signature, or
//! a stale timestamp). Every genuine delivery must be acknowledged 200, every forgery 401,
//! and afterwards each order's history must be exactly pending -> its genuine outcome.

use super::{Ctx, Measured};
use crate::client::{Expect, OK, SignedWebhook, unix_now};
use crate::driver::{self, Plan, Progress};
use crate::stats::Op;
use crate::verify;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const PAID: verify::Expect = verify::Expect::History(&["pending_payment", "processing"]);
const FAILED: verify::Expect = verify::Expect::History(&["pending_payment", "failed"]);
/// Signs forgeries of the wrong-key kind.
const WRONG_KEY: &str = "whsec_bm90LXRoZS1rYXNzYS13ZWJob29rLXNlY3JldA==";

#[derive(Debug, Clone, Copy)]
enum Forgery {
    WrongKey,
    TamperedBody,
    Stale,
}

#[derive(Debug, Clone)]
struct Delivery {
    order: usize,
    /// `None`: the genuine event.
    forgery: Option<Forgery>,
}

struct Placed {
    order_id: String,
    total: i64,
    succeeds: bool,
    acked: AtomicU64,
}

impl Placed {
    fn body(&self, n: usize, success: bool) -> String {
        json!({
            "orderId": self.order_id,
            "status": if success { "Success" } else { "Failed" },
            "paymentId": format!("pay_storm_{n}"),
            "amount": self.total,
            "currency": "EUR",
        })
        .to_string()
    }
}

pub async fn run(ctx: Arc<Ctx>, plan: Plan) -> anyhow::Result<Measured> {
    let o = &ctx.opts;
    let orders = o.orders.max(1);
    let admin = ctx.admin()?;
    let skus: Vec<String> = (0..o.products.clamp(1, orders))
        .map(|p| format!("{}-w{p}", ctx.prefix))
        .collect();
    let stock = o.stock.unwrap_or(1_000_000);
    for (p, sku) in skus.iter().enumerate() {
        ctx.put_product(&admin, sku, 1000 + p as i64, stock).await?;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let failed_share = o.webhook_failed;
    let plans: Vec<(usize, bool)> = (0..orders)
        .map(|_| {
            (
                rng.random_range(0..skus.len()),
                rng.random::<f64>() >= failed_share,
            )
        })
        .collect();
    let placed: Vec<Placed> = {
        let (ctx, skus, plans) = (&ctx, &skus, &plans);
        ctx.setup(orders, |n| async move {
            let (sub, token) = ctx.shopper(&format!("w{}", n % ctx.opts.users.max(1)))?;
            let cart = ctx
                .create_cart(None, Instant::now(), &token)
                .await
                .ok_or_else(|| anyhow::anyhow!("creating cart {n}"))?;
            let (sku, succeeds) = plans[n];
            anyhow::ensure!(
                ctx.set_item(
                    None,
                    Instant::now(),
                    &token,
                    &cart,
                    &skus[sku],
                    1 + (n % 2) as i64
                )
                .await,
                "filling cart {n}"
            );
            let answer = ctx.checkout(None, Instant::now(), &token, &cart).await;
            let (Some(order_id), Some(total)) = (
                answer.str("orderId"),
                answer.body.get("total").and_then(serde_json::Value::as_i64),
            ) else {
                anyhow::bail!("placing order {n}: {} {}", answer.status, answer.code);
            };
            ctx.ledger
                .order(order_id, &sub, verify::Expect::Status("pending_payment"));
            Ok(Placed {
                order_id: order_id.to_string(),
                total,
                succeeds,
                acked: AtomicU64::new(0),
            })
        })
        .await?
    };
    let mut deliveries: Vec<Delivery> = Vec::new();
    for n in 0..orders {
        for _ in 0..o.copies.max(1) {
            deliveries.push(Delivery {
                order: n,
                forgery: None,
            });
        }
        if rng.random::<f64>() < o.forged {
            let forgery = match n % 3 {
                0 => Forgery::WrongKey,
                1 => Forgery::TamperedBody,
                _ => Forgery::Stale,
            };
            deliveries.push(Delivery {
                order: n,
                forgery: Some(forgery),
            });
        }
    }
    deliveries.shuffle(&mut rng);
    let forged = deliveries.iter().filter(|d| d.forgery.is_some()).count();

    let placed = Arc::new(placed);
    let deliveries = Arc::new(deliveries);
    let plan = Plan {
        count: Some(plan.count.unwrap_or(u64::MAX).min(deliveries.len() as u64)),
        ..plan
    };
    let progress = Progress {
        label: "webhook-storm",
        op: Op::Webhook,
        recorder: ctx.recorder.clone(),
        quiet: o.quiet,
    };
    let forged_accepted = Arc::new(AtomicU64::new(0));
    let (c, p, d, f) = (
        ctx.clone(),
        placed.clone(),
        deliveries.clone(),
        forged_accepted.clone(),
    );
    ctx.begin_window().await;
    let elapsed = driver::drive(plan, progress, move |i, intended| {
        let (ctx, placed, deliveries, forged_accepted) =
            (c.clone(), p.clone(), d.clone(), f.clone());
        async move {
            let delivery = &deliveries[i as usize];
            let order = &placed[delivery.order];
            if deliver(&ctx, delivery, order, intended).await && delivery.forgery.is_some() {
                forged_accepted.fetch_add(1, Ordering::Relaxed);
            }
            ctx.recorder.iteration_done();
        }
    })
    .await;
    ctx.end_window().await;

    // Orders whose genuine event was never acknowledged may be in any state.
    for order in placed.iter() {
        let expect = match (order.acked.load(Ordering::Relaxed) > 0, order.succeeds) {
            (false, _) => verify::Expect::Anything,
            (true, true) => PAID,
            (true, false) => FAILED,
        };
        ctx.ledger.set_expectation(&order.order_id, expect);
    }
    let accepted = forged_accepted.load(Ordering::Relaxed);
    let (mut passed, mut violations) = (Vec::new(), Vec::new());
    if accepted == 0 {
        passed.push(format!("none of {forged} forged webhooks was accepted"));
    } else {
        violations.push(format!("{accepted} forged webhooks were answered 2xx"));
    }
    let mut figures = BTreeMap::new();
    figures.insert("orders".into(), orders as f64);
    figures.insert("deliveries".into(), deliveries.len() as f64);
    figures.insert("forged_deliveries".into(), forged as f64);
    Ok(Measured {
        elapsed,
        primary: Op::Webhook,
        figures,
        passed,
        violations,
    })
}

/// Sends one delivery; answers whether Kassa accepted it (2xx).
async fn deliver(ctx: &Ctx, delivery: &Delivery, order: &Placed, intended: Instant) -> bool {
    let id = format!("msg_{}_{}", ctx.prefix, delivery.order);
    let now = unix_now();
    let genuine = order.body(delivery.order, order.succeeds);
    let forged = order.body(delivery.order, !order.succeeds);
    let signed = match delivery.forgery {
        None => SignedWebhook::sign(&ctx.webhook_secret, &id, now, &genuine),
        Some(Forgery::WrongKey) => {
            SignedWebhook::sign(WRONG_KEY, &format!("{id}_forged"), now, &forged)
        }
        Some(Forgery::TamperedBody) => SignedWebhook::sign(&ctx.webhook_secret, &id, now, &genuine)
            .map(|mut s| {
                s.body = forged;
                s
            }),
        Some(Forgery::Stale) => SignedWebhook::sign(
            &ctx.webhook_secret,
            &format!("{id}_stale"),
            now - 600,
            &forged,
        ),
    };
    let Ok(signed) = signed else {
        return false;
    };
    let request = signed.request(&ctx.kassa);
    let (op, expected) = match delivery.forgery {
        None => (Op::Webhook, OK),
        Some(_) => (Op::WebhookForged, Expect(401, Some("invalid_signature"))),
    };
    let answer = ctx
        .kassa
        .call(Some(op), intended, request, &[expected])
        .await;
    if delivery.forgery.is_none() && answer.is(200) {
        order.acked.fetch_add(1, Ordering::Relaxed);
    }
    (200..300).contains(&answer.status)
}
