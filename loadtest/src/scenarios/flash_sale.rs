//! Flash sale: one SKU with S units and U >> S shoppers, each with one unit in a cart made
//! beforehand (setup, not measured); the measured part is every shopper checking out at
//! once. At most S may get a 200; the rest get 409 `cart_conflict`. Afterwards the winners
//! pay (a tenth decline, giving their unit back) and the invariants are checked. Reports
//! reservations/s on the SKU and the mean group-commit batch size from Kassa's metrics.

use super::{Ctx, Measured};
use crate::driver::{self, Plan, Progress};
use crate::stats::Op;
use crate::verify::Expect;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const PRICE: i64 = 4999;

pub async fn run(ctx: Arc<Ctx>, plan: Plan) -> anyhow::Result<Measured> {
    let o = &ctx.opts;
    let stock = o.stock.unwrap_or(100);
    let shoppers = o.shoppers.max(1);
    let sku = format!("{}-flash", ctx.prefix);
    let admin = ctx.admin()?;
    ctx.put_product(&admin, &sku, PRICE, stock).await?;
    let carts: Vec<(String, String, String)> = {
        let (ctx, sku) = (&ctx, &sku);
        ctx.setup(shoppers, |s| async move {
            let (sub, token) = ctx.shopper(&format!("s{s}"))?;
            let cart = ctx
                .create_cart(None, Instant::now(), &token)
                .await
                .ok_or_else(|| anyhow::anyhow!("creating the cart of shopper {s}"))?;
            anyhow::ensure!(
                ctx.set_item(None, Instant::now(), &token, &cart, sku, 1)
                    .await,
                "filling the cart of shopper {s}"
            );
            Ok((sub, token, cart))
        })
        .await?
    };
    let carts = Arc::new(carts);
    ctx.begin_window().await;
    // (order id, payment URL, when it was reserved)
    let winners: Arc<Mutex<Vec<(String, String, Instant)>>> = Arc::default();
    let progress = Progress {
        label: "flash-sale",
        op: Op::Checkout,
        recorder: ctx.recorder.clone(),
        quiet: o.quiet,
    };
    let plan = Plan {
        count: Some(plan.count.unwrap_or(u64::MAX).min(shoppers as u64)),
        ..plan
    };
    let (c, w) = (ctx.clone(), winners.clone());
    let started = Instant::now();
    let elapsed = driver::drive(plan, progress, move |i, intended| {
        let (ctx, carts, winners) = (c.clone(), carts.clone(), w.clone());
        async move {
            let (sub, token, cart) = &carts[i as usize];
            let answer = ctx
                .checkout(Some(Op::Checkout), intended, token, cart)
                .await;
            if let (Some(order_id), Some(url)) = (answer.str("orderId"), answer.str("paymentUrl")) {
                ctx.ledger.order(order_id, sub, Expect::Anything);
                winners.lock().unwrap_or_else(|e| e.into_inner()).push((
                    order_id.to_string(),
                    url.to_string(),
                    Instant::now(),
                ));
            }
            ctx.recorder.iteration_done();
        }
    })
    .await;
    ctx.end_window().await;
    let winners = std::mem::take(&mut *winners.lock().unwrap_or_else(|e| e.into_inner()));

    let mut figures = BTreeMap::new();
    let reserved = winners.len() as f64;
    figures.insert("stock".into(), stock as f64);
    figures.insert("shoppers".into(), shoppers as f64);
    figures.insert("reserved".into(), reserved);
    if let Some(last) = winners.iter().map(|w| w.2).max() {
        let window = (last - started).as_secs_f64().max(1e-6);
        figures.insert("reserve_window_seconds".into(), window);
        figures.insert("reservations_per_second".into(), reserved / window);
    }
    if let Some((commands, writes)) = ctx.window_delta("kassa_product_batch_size") {
        figures.insert("product_writes".into(), writes);
        figures.insert("mean_batch_size".into(), commands / writes);
    }

    let (mut passed, mut violations) = (Vec::new(), Vec::new());
    if winners.len() as i64 <= stock {
        passed.push(format!(
            "{} of {shoppers} shoppers got one of {stock} units, none more",
            winners.len()
        ));
    } else {
        violations.push(format!(
            "{} checkouts answered 200 for {stock} units",
            winners.len()
        ));
    }
    // The winners pay; every tenth declines and gives its unit back.
    {
        let (ctx, winners) = (&ctx, &winners);
        ctx.setup(winners.len(), |n| async move {
            let (order_id, url, _) = &winners[n];
            let pay = n % 10 != 9;
            if ctx.decide(None, Instant::now(), url, pay).await {
                let expect = if pay { "processing" } else { "failed" };
                ctx.ledger.set_expectation(order_id, Expect::Status(expect));
            }
            Ok(())
        })
        .await?;
    }
    Ok(Measured {
        elapsed,
        primary: Op::Checkout,
        figures,
        passed,
        violations,
    })
}
