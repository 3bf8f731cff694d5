//! Storefront: N products; each iteration is one shopper's journey: a new cart, 1 to 5
//! random lines of 1 to 3 units, checkout, then pay (most), decline (some) or abandon (a few,
//! left for the reservation TTL) at the sandbox gateway. A sold-out line is a 409 the
//! storefront expects. The journey's first request is timed from its intended start.

use super::{Ctx, Measured};
use crate::driver::{self, Plan, Progress};
use crate::stats::Op;
use crate::verify::Expect;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

const PAID: Expect = Expect::Status("processing");
const DECLINED: Expect = Expect::Status("failed");
const ABANDONED: Expect = Expect::OneOf(&["pending_payment", "expired"]);

pub async fn run(ctx: Arc<Ctx>, plan: Plan) -> anyhow::Result<Measured> {
    let o = &ctx.opts;
    let stock = o.stock.unwrap_or(100_000);
    let admin = ctx.admin()?;
    let skus: Vec<String> = (0..o.products.max(1))
        .map(|p| format!("{}-p{p}", ctx.prefix))
        .collect();
    {
        let (ctx, admin, skus) = (&ctx, &admin, &skus);
        ctx.setup(skus.len(), |p| async move {
            let price = 500 + (p as i64 * 37) % 9500;
            ctx.put_product(admin, &skus[p], price, stock).await
        })
        .await?;
    }
    let shoppers: Vec<(String, String)> = (0..o.users.max(1))
        .map(|u| ctx.shopper(&format!("u{u}")))
        .collect::<anyhow::Result<_>>()?;
    let skus = Arc::new(skus);
    let shoppers = Arc::new(shoppers);
    let progress = Progress {
        label: "storefront",
        op: Op::Checkout,
        recorder: ctx.recorder.clone(),
        quiet: o.quiet,
    };
    let seed = o.seed;
    let (decline, abandon) = (o.decline, o.abandon);
    let c = ctx.clone();
    ctx.begin_window().await;
    let elapsed = driver::drive(plan, progress, move |i, intended| {
        let (ctx, skus, shoppers) = (c.clone(), skus.clone(), shoppers.clone());
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9));
            let (sub, token) = &shoppers[(i % shoppers.len() as u64) as usize];
            journey(
                &ctx, &mut rng, sub, token, &skus, intended, decline, abandon,
            )
            .await;
            ctx.recorder.iteration_done();
        }
    })
    .await;
    ctx.end_window().await;
    Ok(Measured {
        elapsed,
        primary: Op::Checkout,
        figures: BTreeMap::new(),
        passed: Vec::new(),
        violations: Vec::new(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn journey(
    ctx: &Ctx,
    rng: &mut rand::rngs::StdRng,
    sub: &str,
    token: &str,
    skus: &[String],
    intended: Instant,
    decline: f64,
    abandon: f64,
) {
    let Some(cart) = ctx.create_cart(Some(Op::CartCreate), intended, token).await else {
        return;
    };
    let lines = rng.random_range(1..=5usize).min(skus.len());
    let chosen: Vec<&String> = skus.sample(rng, lines).collect();
    for sku in chosen {
        let qty = rng.random_range(1..=3);
        if !ctx
            .set_item(Some(Op::CartAdd), Instant::now(), token, &cart, sku, qty)
            .await
        {
            return;
        }
    }
    let answer = ctx
        .checkout(Some(Op::Checkout), Instant::now(), token, &cart)
        .await;
    let (Some(order_id), Some(payment_url)) = (answer.str("orderId"), answer.str("paymentUrl"))
    else {
        return;
    };
    let roll: f64 = rng.random();
    if roll < abandon {
        ctx.ledger.order(order_id, sub, ABANDONED);
        return;
    }
    let pay = roll >= abandon + decline;
    let (op, expect) = if pay {
        (Op::Pay, PAID)
    } else {
        (Op::Decline, DECLINED)
    };
    // Recorded before deciding: if the decision gets no answer, the order may have moved.
    ctx.ledger.order(order_id, sub, Expect::Anything);
    if ctx.decide(Some(op), Instant::now(), payment_url, pay).await {
        ctx.ledger.set_expectation(order_id, expect);
    }
}
