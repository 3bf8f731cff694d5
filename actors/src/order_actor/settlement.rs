//! Settlement: what a payment webhook, the housekeeping tick (expiry, reconciliation) and
//! every other event do to a stored order, through the transition table of `order.rs`. The
//! only writer of an order's status after checkout.

use super::effects::{Settled, dispatch_effects, release_skus};
use super::joint::{self, Joint};
use super::{
    NoticeOutcome, OrderError, OrderServices, PaymentNotice, REMEMBERED_WEBHOOKS, Services,
};
use crate::ActorError;
use crate::gateway::PaymentState;
use crate::order::{Decision, OrderEvent, OrderStatus, decide};
use crate::product::{Reserve, ReserveOutcome};
use crate::store::{OrderRecord, StatusChange, WriteOutcome};

/// Applies `event` to `order`: persists the new status with its effects (and whatever
/// `record` adds), then runs the effects. Answers the order as it now stands and whether it
/// moved.
pub(super) async fn transition(
    svc: &Services,
    order: OrderRecord,
    event: OrderEvent,
    record: impl FnOnce(&mut OrderRecord),
) -> Result<(Settled, Option<OrderStatus>), (OrderRecord, OrderError)> {
    let Decision::Move { to, effects } = decide(order.status, event) else {
        return Ok((order.into(), None));
    };
    let now = svc.clock.now();
    let from = order.status;
    let mut next = order.clone();
    next.status = to;
    next.updated_at = now;
    next.history.push(StatusChange {
        status: to,
        at: now,
    });
    for effect in effects {
        if !next.pending_effects.contains(effect) {
            next.pending_effects.push(*effect);
        }
    }
    record(&mut next);
    let next = match joint::applies(svc, &order, &next) {
        true => match joint::write_with_stock(svc, &order, next.clone()).await {
            Joint::Written(next) => next,
            Joint::Failed(stored, e) => return Err((stored, e)),
            Joint::NotCarried => write_next(svc, order, next).await?,
        },
        false => write_next(svc, order, next).await?,
    };
    metrics::counter!("kassa_order_transitions_total", "from" => from.as_str(), "to" => to.as_str())
        .increment(1);
    tracing::info!(order_id = %next.id, %from, %to, ?event, "order transition");
    Ok((dispatch_effects(svc, next).await, Some(to)))
}

/// Writes `next` as the version after `order`'s. On a conflict answers the stored order (or
/// `order` if it cannot be read) with the error.
pub(super) async fn write_next(
    svc: &Services,
    order: OrderRecord,
    mut next: OrderRecord,
) -> Result<OrderRecord, (OrderRecord, OrderError)> {
    next.version = order.version + 1;
    match svc.store.write_order(&next, order.version).await {
        Ok(WriteOutcome::Applied) => Ok(next),
        Ok(WriteOutcome::Conflict) => {
            metrics::counter!("kassa_store_conflicts_total", "entity" => "order").increment(1);
            let reloaded = svc
                .store
                .load_order(order.id)
                .await
                .ok()
                .flatten()
                .unwrap_or(order);
            Err((reloaded, ActorError::Contended.into()))
        }
        Err(e) => {
            tracing::error!(order_id = %order.id, error = %e, "order write failed");
            Err((order, ActorError::Unavailable.into()))
        }
    }
}

/// Holds the order's units again (a late payment for a failed or expired order).
pub(super) async fn reacquire(svc: &OrderServices, order: &OrderRecord) -> bool {
    let expires_at = svc.clock.now() + svc.settings.reservation_ttl;
    for (i, line) in order.lines.iter().enumerate() {
        let reserve = Reserve {
            order_id: order.id,
            qty: line.quantity,
            expires_at,
            expected_price: None,
        };
        if !matches!(
            svc.products.ask(&line.sku, reserve).await,
            Ok(Ok(ReserveOutcome::Reserved))
        ) {
            release_skus(svc, order.id, order.lines[..=i].iter().map(|l| &l.sku)).await;
            return false;
        }
    }
    true
}

pub(super) async fn notice(
    svc: &Services,
    order: OrderRecord,
    msg: PaymentNotice,
) -> (Settled, Result<NoticeOutcome, OrderError>) {
    if order.seen_webhooks.contains(&msg.webhook_id) {
        metrics::counter!("kassa_webhooks_total", "outcome" => "duplicate").increment(1);
        return (order.into(), Ok(NoticeOutcome::Duplicate));
    }
    let amount_matches = msg.amount == order.total && msg.currency == order.currency.code();
    let event = if msg.succeeded {
        if !amount_matches {
            metrics::counter!("kassa_webhook_amount_mismatch_total").increment(1);
            tracing::warn!(
                order_id = %order.id, amount = msg.amount, currency = %msg.currency,
                expected = order.total, expected_currency = order.currency.code(),
                "payment amount differs from the order; refunding"
            );
        }
        let stock_held = match order.status {
            OrderStatus::PendingPayment => true,
            OrderStatus::Failed | OrderStatus::Expired | OrderStatus::Cancelled
                if amount_matches =>
            {
                reacquire(svc, &order).await
            }
            _ => false,
        };
        OrderEvent::PaymentSucceeded {
            amount_matches,
            stock_held,
        }
    } else {
        OrderEvent::PaymentFailed
    };
    let status = order.status;
    if let Decision::Stay = decide(status, event) {
        // Nothing moves, but the id is remembered: a redelivery is then a duplicate, not
        // logged and counted (a mismatch, say) a second time.
        // If that write fails the event is still answered 200 (it changes nothing); a
        // redelivery is then counted again, nothing worse.
        let mut next = order.clone();
        remember_webhook(&mut next, msg.webhook_id);
        metrics::counter!("kassa_webhooks_total", "outcome" => "unchanged").increment(1);
        let order = match write_next(svc, order, next).await {
            Ok(order) => order,
            Err((order, e)) => {
                tracing::warn!(order_id = %order.id, error = %e, "could not remember a webhook that changed nothing");
                order
            }
        };
        return (order.into(), Ok(NoticeOutcome::Unchanged(status)));
    }
    let webhook_id = msg.webhook_id.clone();
    let settled = msg.succeeded.then(|| msg.payment_id.clone());
    match transition(svc, order, event, move |next| {
        remember_webhook(next, webhook_id);
        if settled.is_some() {
            next.settled_payment_id = settled;
        }
    })
    .await
    {
        Ok((settled, Some(to))) => {
            metrics::counter!("kassa_webhooks_total", "outcome" => "applied").increment(1);
            (settled, Ok(NoticeOutcome::Moved(to)))
        }
        // Not reached: `decide` answered `Move` above, and it is a pure function.
        Ok((settled, None)) => (settled, Ok(NoticeOutcome::Unchanged(status))),
        Err((order, e)) => (order.into(), Err(e)),
    }
}

/// Adds a webhook id to the order's most recent ones.
pub(super) fn remember_webhook(order: &mut OrderRecord, webhook_id: String) {
    order.seen_webhooks.push(webhook_id);
    let excess = order
        .seen_webhooks
        .len()
        .saturating_sub(REMEMBERED_WEBHOOKS);
    order.seen_webhooks.drain(..excess);
}

pub(super) async fn tick(svc: &Services, order: OrderRecord, query_gateway: bool) -> Settled {
    if order.status != OrderStatus::PendingPayment {
        return dispatch_effects(svc, order).await;
    }
    // A pending order has no effects to run (none of its transitions into it asks for any).
    if query_gateway && let Some(payment) = order.payment.clone() {
        match svc.gateway.status(&payment.payment_id).await {
            Ok(status) if status.state != PaymentState::Pending => {
                metrics::counter!("kassa_reconciliations_total", "outcome" => "settled")
                    .increment(1);
                tracing::info!(order_id = %order.id, state = ?status.state, "reconciled a payment the webhook had not reported");
                let msg = PaymentNotice {
                    webhook_id: format!("reconcile:{}", payment.payment_id),
                    succeeded: status.state == PaymentState::Succeeded,
                    payment_id: status.payment_id,
                    amount: status.amount,
                    currency: status.currency.code().to_string(),
                };
                return notice(svc, order, msg).await.0;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(order_id = %order.id, error = %e, "payment status query failed")
            }
        }
    }
    if order.expires_at <= svc.clock.now() {
        metrics::counter!("kassa_orders_expired_total").increment(1);
        return match transition(svc, order, OrderEvent::ReservationExpired, |_| {}).await {
            Ok((settled, _)) => settled,
            Err((order, _)) => order.into(),
        };
    }
    order.into()
}

/// Cancels an unpaid order: stored `cancelled` with its effects (payment cancelled at the
/// gateway, stock released, cart unlocked with its lines). A cancelled order answers as it
/// is; any other status cannot be cancelled.
pub(super) async fn cancel(
    svc: &Services,
    order: OrderRecord,
) -> (Settled, Result<OrderRecord, OrderError>) {
    match order.status {
        OrderStatus::PendingPayment => {}
        OrderStatus::Cancelled => return (order.clone().into(), Ok(order)),
        other => return (order.into(), Err(OrderError::NotCancellable(other))),
    }
    match transition(svc, order, OrderEvent::CancelRequested, |_| {}).await {
        Ok((settled, _)) => {
            metrics::counter!("kassa_orders_cancelled_total").increment(1);
            let answer = settled.order.clone();
            (settled, Ok(answer))
        }
        Err((order, e)) => (order.into(), Err(e)),
    }
}
