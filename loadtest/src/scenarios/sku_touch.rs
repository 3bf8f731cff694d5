//! SKU touch: GET /api/products/{sku} for `--count` distinct SKUs, unknown ones (each starts
//! a ProductActor that finds nothing and answers 404) or, with `--existing`, SKUs created
//! first (each GET starts an actor holding the product), then Kassa's memory: RSS and its
//! high water mark from /proc, and live product actors from /metrics; with `--settle`, again
//! after that long, once idle actors had time to passivate. Memory must stay bounded.

use super::{Ctx, Measured, metric_gauge};
use crate::client::Expect;
use crate::driver::{self, Plan, Progress};
use crate::stats::Op;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(
    ctx: Arc<Ctx>,
    plan: Plan,
    memory: impl Fn() -> Option<(u64, u64)>,
) -> anyhow::Result<Measured> {
    let o = &ctx.opts;
    let mut figures = BTreeMap::new();
    if let Some((rss, _)) = memory() {
        figures.insert("rss_before_mib".into(), rss as f64 / 1024.0);
    }
    let progress = Progress {
        label: "sku-touch",
        op: Op::ProductGet,
        recorder: ctx.recorder.clone(),
        quiet: o.quiet,
    };
    let plan = Plan {
        count: Some(plan.count.unwrap_or(10_000)),
        ..plan
    };
    let count = plan.count.unwrap_or(0) as usize;
    if o.existing {
        let admin = ctx.admin()?;
        let started = Instant::now();
        ctx.setup(count, |i| {
            let (ctx, admin) = (ctx.clone(), admin.clone());
            async move {
                ctx.put_product(&admin, &format!("{}-t{i}", ctx.prefix), 1999, 10)
                    .await
            }
        })
        .await?;
        figures.insert(
            "skus_created_per_second".into(),
            count as f64 / started.elapsed().as_secs_f64(),
        );
        if let Some((rss, _)) = memory() {
            figures.insert("rss_after_create_mib".into(), rss as f64 / 1024.0);
        }
    }
    let expect = if o.existing {
        Expect(200, None)
    } else {
        Expect(404, Some("product_not_found"))
    };
    let c = ctx.clone();
    ctx.begin_window().await;
    let elapsed = driver::drive(plan, progress, move |i, intended| {
        let ctx = c.clone();
        async move {
            let request = ctx
                .kassa
                .http
                .get(ctx.kassa.url(&format!("/api/products/{}-t{i}", ctx.prefix)));
            ctx.kassa
                .call(Some(Op::ProductGet), intended, request, &[expect])
                .await;
            ctx.recorder.iteration_done();
        }
    })
    .await;
    ctx.end_window().await;
    figures.insert("skus_touched".into(), ctx.recorder.iterations() as f64);
    let live = || metric_gauge(&ctx.kassa, "kassa_actors_live", "kind=\"product\"");
    if let Some(n) = live().await {
        figures.insert("live_product_actors_after".into(), n);
    }
    if let Some((rss, hwm)) = memory() {
        figures.insert("rss_after_mib".into(), rss as f64 / 1024.0);
        figures.insert("rss_peak_mib".into(), hwm as f64 / 1024.0);
    }
    if let Some(settle) = o.settle {
        let until = Instant::now() + settle;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(10).min(until - Instant::now())).await;
            if !o.quiet {
                eprintln!(
                    "settling: {} live product actors, RSS {} MiB",
                    live().await.unwrap_or(f64::NAN),
                    memory().map_or(0, |m| m.0 / 1024)
                );
            }
        }
        if let Some(n) = live().await {
            figures.insert("live_product_actors_settled".into(), n);
        }
        if let Some((rss, _)) = memory() {
            figures.insert("rss_settled_mib".into(), rss as f64 / 1024.0);
        }
    }
    Ok(Measured {
        elapsed,
        primary: Op::ProductGet,
        figures,
        passed: Vec::new(),
        violations: Vec::new(),
    })
}
