//! Checkout: lock the cart, reserve every line at once (all or nothing), open the payment,
//! store the order `pending_payment` with its link. Never stores an order whose stock is not
//! reserved, and releases whatever it took when it stops short.

use super::effects::{Settled, release_skus};
use super::settlement::transition;
use super::{
    ConflictReason, LineConflict, OrderError, OrderSettings, PlaceOrder, Placed, Services,
};
use crate::ActorError;
use crate::cart::{BeginCheckout, CartError, EndCheckout};
use crate::domain::{MAX_TOTAL, OrderId};
use crate::gateway::PaymentRequest;
use crate::gateway::{DisplayLine, PaymentDisplay};
use crate::order::{OrderEvent, OrderStatus};
use crate::product::{Reserve, ReserveOutcome};
use crate::store::{OrderLine, OrderRecord, PaymentRef, StatusChange, WriteOutcome};
use futures_util::future::join_all;

/// A checkout stopped short: the order it stored (failed, its effects possibly finishing), if
/// any, and the answer.
pub(super) type Failed = (Option<Settled>, Result<Placed, OrderError>);

pub(super) async fn place(
    svc: &Services,
    id: OrderId,
    msg: PlaceOrder,
) -> Result<OrderRecord, Failed> {
    let now = svc.clock.now();
    let expires_at = now + svc.settings.reservation_ttl;
    let begin = BeginCheckout {
        user: msg.user.clone(),
        order_id: id,
        locked_until: expires_at,
    };
    let cart = match svc.carts.ask(&msg.cart_id, begin).await {
        Ok(Ok(cart)) => cart,
        Ok(Err(CartError::Locked { order_id })) => {
            return Err((None, Ok(Placed::Existing(order_id))));
        }
        Ok(Err(CartError::NotFound)) => return Err((None, Err(OrderError::CartNotFound))),
        Ok(Err(CartError::Empty)) => return Err((None, Err(OrderError::CartEmpty))),
        Ok(Err(CartError::Actor(e))) => return Err((None, Err(e.into()))),
        Ok(Err(other)) => {
            tracing::error!(order_id = %id, error = %other, "unexpected cart answer at checkout");
            return Err((None, Err(ActorError::Unavailable.into())));
        }
        Err(e) => return Err((None, Err(e.into()))),
    };
    let mut lines = cart.lines.clone();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let currency = lines[0].currency;

    let unlock = || async {
        let _ = svc
            .carts
            .ask(
                &msg.cart_id,
                EndCheckout {
                    order_id: id,
                    paid: None,
                },
            )
            .await;
    };

    // Carts are bounded (domain::MAX_TOTAL), so only a cart stored before those bounds
    // can be refused here.
    if cart.total().is_none_or(|t| t > MAX_TOTAL) {
        unlock().await;
        return Err((None, Err(OrderError::TotalTooLarge)));
    }

    // 1. Reserve every line at once, all or nothing. Each SKU is its own actor, so the lines
    // share one round of group commits instead of one each, and every line is tried, so a
    // refusal lists every offending line.
    let reserves = lines.iter().map(|line| {
        let reserve = Reserve {
            order_id: id,
            qty: line.quantity,
            expires_at,
            expected_price: Some((line.unit_price, line.currency)),
        };
        svc.products.ask(&line.sku, reserve)
    });
    let outcomes = join_all(reserves).await;
    let mut conflicts = Vec::new();
    let mut failure = None;
    let mut to_release = Vec::new();
    for (line, outcome) in lines.iter().zip(outcomes) {
        match outcome {
            Ok(Ok(ReserveOutcome::Reserved)) => to_release.push(&line.sku),
            Ok(Ok(refused)) => conflicts.push(refusal(line, refused)),
            // Unknown whether it reserved: release it too (releasing nothing is harmless).
            Ok(Err(e)) => {
                to_release.push(&line.sku);
                failure = Some(OrderError::from(e));
            }
            Err(e) => {
                to_release.push(&line.sku);
                failure = Some(OrderError::from(e));
            }
        }
    }
    if failure.is_some() || !conflicts.is_empty() {
        release_skus(svc, id, to_release).await;
        unlock().await;
        let error = match failure {
            // A line whose answer is unknown makes the conflict list incomplete: retry.
            Some(e) => e,
            None => {
                metrics::counter!("kassa_checkouts_total", "outcome" => "conflict").increment(1);
                metrics::counter!("kassa_reservation_conflicts_total")
                    .increment(conflicts.len() as u64);
                OrderError::Conflicts(conflicts)
            }
        };
        return Err((None, Err(error)));
    }

    let order_lines: Vec<OrderLine> = lines
        .iter()
        .map(|l| OrderLine {
            sku: l.sku.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price,
        })
        .collect();
    let total = crate::store::order_total(&order_lines).unwrap_or(MAX_TOTAL);
    // Version 0: not stored yet.
    let mut order = OrderRecord {
        id,
        owner: msg.user,
        cart_id: msg.cart_id,
        lines: order_lines,
        total,
        currency,
        shipping: msg.shipping,
        email: msg.email,
        status: OrderStatus::PendingPayment,
        payment: None,
        settled_payment_id: None,
        created_at: now,
        updated_at: now,
        expires_at,
        history: vec![StatusChange {
            status: OrderStatus::PendingPayment,
            at: now,
        }],
        pending_effects: Vec::new(),
        seen_webhooks: Vec::new(),
        version: 0,
    };

    // 2. Open the payment before storing the order, so the order is written once, with its
    // link. Safe: nobody can pay before this checkout answers (the link is in the answer),
    // a webhook for this order queues behind this flow in the actor's mailbox, and the
    // order id is the gateway's idempotency key. A crash before step 3 leaves a payment
    // nobody can reach and reservations that lapse at their expiry, as a lost checkout
    // always did.
    let request = payment_request(
        &svc.settings,
        &order,
        msg.return_url.clone(),
        msg.cancel_url.clone(),
    );
    let started = std::time::Instant::now();
    let session = match svc.gateway.initiate(request).await {
        Ok(session) => {
            metrics::histogram!("kassa_gateway_initiate_seconds", "outcome" => "ok")
                .record(started.elapsed().as_secs_f64());
            session
        }
        Err(e) => {
            metrics::histogram!("kassa_gateway_initiate_seconds", "outcome" => "error")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("kassa_checkouts_total", "outcome" => "gateway_error").increment(1);
            tracing::error!(order_id = %id, error = %e, "payment initiation failed; failing the order");
            // Stored as failed (with its pending_payment history), then its effects started.
            // Stock and cart are back before the answer (asked again here, idempotently, so
            // a retry or a read right after sees them); the late payment's cancel finishes
            // after the answer, as the gateway that just failed may take its deadline again.
            // When the store fails too, there is no order: the actor holds none (rather than
            // an unstored pending_payment order it would answer and later store as expired).
            // A payment the gateway opened meanwhile has a link nobody holds. Should the
            // write have applied after all, the stored failed order's effects run when its
            // actor next starts.
            let settled = match transition(svc, order, OrderEvent::GatewayUnavailable, |_| {}).await
            {
                Ok((settled, _)) => Some(settled),
                Err((_, e)) => {
                    tracing::error!(order_id = %id, error = ?e, "cannot store the failed order either; no order placed");
                    None
                }
            };
            release_skus(svc, id, lines.iter().map(|l| &l.sku)).await;
            unlock().await;
            return Err((settled, Err(OrderError::GatewayUnavailable)));
        }
    };
    order.payment = Some(PaymentRef {
        payment_id: session.payment_id,
        payment_url: session.payment_url,
        token: session.token,
    });

    // 3. The order is durable from here on.
    order.version = 1;
    match svc.store.write_order(&order, 0).await {
        Ok(WriteOutcome::Applied) => {}
        outcome => {
            tracing::error!(order_id = %id, ?outcome, "cannot store the new order");
            release_skus(svc, id, lines.iter().map(|l| &l.sku)).await;
            unlock().await;
            // The payment opened in step 2 belongs to no order a shopper can reach: cancel
            // it before answering. Also when the write's outcome is unknown (a timeout that
            // applied after all): that order then expires unpaid, as its stock is back.
            // A refused row (`Conflict`) is the crash recovery's fence: another replica took
            // this checkout for dead and released what it held.
            if let Some(payment) = &order.payment
                && !super::effects::cancel_payment(svc, id, &payment.payment_id).await
            {
                tracing::error!(order_id = %id, payment_id = %payment.payment_id,
                    "the unstored order's payment could not be cancelled; it lapses at the gateway");
            }
            return Err((None, Err(ActorError::Unavailable.into())));
        }
    }
    metrics::counter!("kassa_checkouts_total", "outcome" => "placed").increment(1);
    tracing::info!(order_id = %id, total, currency = currency.code(), "order placed");
    Ok(order)
}

/// What the gateway is asked to open for `order`: the same for every initiation of one order
/// but for the URLs, which only the checkout knows (the gateway answers the payment it holds
/// under the order id whatever they are).
pub(super) fn payment_request(
    settings: &OrderSettings,
    order: &OrderRecord,
    return_url: String,
    cancel_url: Option<String>,
) -> PaymentRequest {
    PaymentRequest {
        order_id: order.id,
        amount: order.total,
        currency: order.currency,
        callback_url: settings.callback_url.clone(),
        return_url,
        display: PaymentDisplay {
            shop_name: settings.shop_name.clone(),
            order_number: order.id.number(),
            lines: order
                .lines
                .iter()
                .map(|l| DisplayLine {
                    name: l.name.clone(),
                    quantity: l.quantity,
                    amount: l.total().unwrap_or(MAX_TOTAL),
                })
                .collect(),
            expires_at: Some(order.expires_at),
            cancel_url,
        },
    }
}

pub(super) fn refusal(line: &crate::store::CartLine, outcome: ReserveOutcome) -> LineConflict {
    let (reason, available, current_price) = match outcome {
        ReserveOutcome::InsufficientStock { available } => (
            ConflictReason::InsufficientStock,
            available,
            Some(line.unit_price),
        ),
        ReserveOutcome::PriceChanged {
            current, available, ..
        } => (ConflictReason::PriceChanged, available, Some(current)),
        ReserveOutcome::UnknownProduct | ReserveOutcome::Reserved => {
            (ConflictReason::UnknownProduct, 0, None)
        }
    };
    LineConflict {
        sku: line.sku.clone(),
        reason,
        requested: line.quantity,
        available,
        cart_price: line.unit_price,
        current_price,
    }
}
