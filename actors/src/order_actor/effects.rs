//! The effects of a transition (stock committed or released, cart emptied or unlocked,
//! email queued, payment refunded or cancelled): each idempotent, keyed by the order id, run
//! after the transition that asked for them is durable and recorded once done.

use super::{OrderError, OrderServices, Services};
use crate::cart::EndCheckout;
use crate::domain::{OrderId, Sku};
use crate::gateway::{CancelOutcome, GatewayError};
use crate::order::{Decision, Effect, OrderEvent, decide};
use crate::product::{Commit, CommitOutcome, Release};
use crate::store::{EmailKind, OrderRecord, OutboxEmail, StatusChange, WriteOutcome};
use futures_util::future::join_all;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

/// Releases the order's reservation on each SKU, all at once; answers whether every
/// release was confirmed (one that failed is reclaimed by its product's sweep at expiry).
pub(super) async fn release_skus<'a>(
    svc: &OrderServices,
    id: OrderId,
    skus: impl IntoIterator<Item = &'a Sku>,
) -> bool {
    let released = join_all(skus.into_iter().map(|sku| async move {
        let result = ask_release(svc, id, sku).await;
        if let Err(e) = &result {
            tracing::warn!(order_id = %id, %sku, error = %e, "release failed; the sweep will reclaim it");
        }
        result.is_ok()
    }))
    .await;
    released.into_iter().all(|ok| ok)
}

pub(super) async fn ask_release(
    svc: &OrderServices,
    id: OrderId,
    sku: &Sku,
) -> Result<(), OrderError> {
    svc.products.ask(sku, Release { order_id: id }).await??;
    Ok(())
}

/// The rest of a transition: its effects, already dispatched, finishing and then recorded;
/// resolves to the order as it then stands.
pub(super) type Finishing = Pin<Box<dyn Future<Output = OrderRecord>>>;

/// An order as a flow leaves it: durable as `order`, with its effects possibly still
/// `finishing`. The actor answers first and lets them finish before its next message.
pub(super) struct Settled {
    pub(super) order: OrderRecord,
    pub(super) finishing: Option<Finishing>,
}

impl From<OrderRecord> for Settled {
    fn from(order: OrderRecord) -> Self {
        Self {
            order,
            finishing: None,
        }
    }
}

/// Starts the order's pending effects and answers once each has been handed to its actor
/// (or its write queued), so whatever a caller reads after the answer already sees them;
/// the rest of the work is left `finishing`. The transition that asked for them is durable,
/// so a crash before they finish only runs them again (each is idempotent).
pub(super) async fn dispatch_effects(svc: &Services, order: OrderRecord) -> Settled {
    if order.pending_effects.is_empty() {
        return order.into();
    }
    let committed = order.clone();
    let svc = Arc::clone(svc);
    let mut finishing: Finishing = Box::pin(async move {
        let done = run_effects(&svc, order.clone()).await;
        record_effects(&svc, &order, done).await
    });
    match futures_util::poll!(finishing.as_mut()) {
        Poll::Ready(order) => order.into(),
        Poll::Pending => Settled {
            order: committed,
            finishing: Some(finishing),
        },
    }
}

/// Carries out the order's pending effects, all at once (each talks to a different actor or
/// the gateway, and each is idempotent). What failed stays pending for the next tick. A
/// refund the gateway accepted moves the order on. Answers the order as it then stands,
/// not yet written.
pub(super) async fn run_effects(svc: &OrderServices, order: OrderRecord) -> OrderRecord {
    let outcomes = join_all(
        order
            .pending_effects
            .iter()
            .map(|effect| run_effect(svc, &order, *effect)),
    )
    .await;
    let mut next = order.clone();
    next.pending_effects = Vec::new();
    let mut refunded = false;
    for (effect, done) in order.pending_effects.iter().zip(outcomes) {
        if !done {
            tracing::warn!(order_id = %order.id, ?effect, "effect not done yet; will retry");
            next.pending_effects.push(*effect);
        } else if *effect == Effect::RequestRefund {
            refunded = true;
        }
    }
    let now = svc.clock.now();
    if refunded
        && let Decision::Move { to, effects } = decide(next.status, OrderEvent::RefundAccepted)
    {
        next.status = to;
        for effect in effects {
            if !queue_after_refund(svc, &next, *effect).await {
                next.pending_effects.push(*effect);
            }
        }
        next.history.push(StatusChange {
            status: to,
            at: now,
        });
        metrics::counter!("kassa_order_transitions_total", "from" => order.status.as_str(), "to" => to.as_str())
            .increment(1);
    }
    next.updated_at = now;
    next
}

/// How long before its lapse a cart lock must still be when its paid order's effects run for
/// the cart's end to be left to its next reader: more than the clocks of two replicas differ.
const LAPSE_MARGIN: time::Duration = time::Duration::minutes(1);

pub(super) async fn run_effect(svc: &OrderServices, order: &OrderRecord, effect: Effect) -> bool {
    match effect {
        Effect::ReleaseStock => release_stock(svc, order).await,
        Effect::CommitStock => commit_stock(svc, order).await,
        // On a shared store, a cart locked by an order paid while it held the lock keeps the
        // lock as stored: the next reader of the cart settles it from this order (one
        // conditional write fewer per paid order; `cart::read_settled`). Not on the embedded
        // store, whose paid webhook writes the cart's end in its own transaction anyway. The
        // lock must still be live now, the transition stored (the lock lapses when the order
        // expires): a transition stamped in time but stored late (a write that timed out and
        // was completed later) may have been read as pending after the lock lapsed, and the
        // cart changed meanwhile.
        Effect::EmptyCart
            if svc.store.is_shared()
                && order.paid_from_pending()
                && svc.clock.now() + LAPSE_MARGIN <= order.expires_at =>
        {
            true
        }
        Effect::UnlockCart | Effect::EmptyCart => {
            let end = end_checkout(order, effect == Effect::EmptyCart);
            matches!(svc.carts.ask(&order.cart_id, end).await, Ok(Ok(())))
        }
        Effect::QueueEmail => queue_email(svc, order, EmailKind::Confirmation).await,
        Effect::QueueRefundEmail => queue_email(svc, order, EmailKind::Refund).await,
        Effect::RequestRefund => request_refund(svc, order).await,
        Effect::CancelPayment => match &order.payment {
            Some(payment) => cancel_payment(svc, order.id, &payment.payment_id).await,
            None => true,
        },
        Effect::CancelLatePayment => cancel_late_payment(svc, order).await,
    }
}

/// What the order's cart is told when the order ends: `paid`, what it bought leaves the cart.
pub(super) fn end_checkout(order: &OrderRecord, paid: bool) -> EndCheckout {
    EndCheckout {
        order_id: order.id,
        paid: paid.then(|| {
            order
                .lines
                .iter()
                .map(|l| (l.sku.clone(), l.quantity))
                .collect()
        }),
    }
}

/// Records `order` (`stored` after its effects ran). When all that changed is that every
/// effect is done, and the order needs nothing more, a store that can records just that,
/// with no new version (`Store::record_effects_done`); otherwise `order` is written as the
/// next version. On a failed record or write, the stored record wins and its effects run
/// again.
pub(super) async fn record_effects(
    svc: &OrderServices,
    stored: &OrderRecord,
    order: OrderRecord,
) -> OrderRecord {
    let mut finished = stored.clone();
    finished.pending_effects.clear();
    // Compared as `order` is but for the time it was touched, which the record does not move.
    finished.updated_at = order.updated_at;
    let only_effects_done = order == finished;
    finished.updated_at = stored.updated_at;
    if only_effects_done && !finished.is_active() {
        match svc.store.record_effects_done(stored).await {
            Ok(true) => return finished,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(order_id = %order.id, error = %e, "could not record finished effects; they will run again");
                return stored.clone();
            }
        }
    }
    let expected = order.version;
    let mut next = order;
    next.version = expected + 1;
    match svc.store.write_order(&next, expected).await {
        Ok(WriteOutcome::Applied) => next,
        outcome => {
            tracing::warn!(order_id = %next.id, ?outcome, "could not record finished effects; they will run again");
            // The stored record, or the last one known stored: never `order`, which was not
            // written (held as if it were, a later record of its effects could hide the
            // stored version's).
            svc.store
                .load_order(next.id)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| stored.clone())
        }
    }
}

/// Effects of the refund's acceptance, run right away (only the refund email so far).
pub(super) async fn queue_after_refund(
    svc: &OrderServices,
    order: &OrderRecord,
    effect: Effect,
) -> bool {
    match effect {
        Effect::QueueRefundEmail => queue_email(svc, order, EmailKind::Refund).await,
        other => {
            tracing::error!(order_id = %order.id, ?other, "unexpected effect after a refund");
            true
        }
    }
}

pub(super) async fn release_stock(svc: &OrderServices, order: &OrderRecord) -> bool {
    release_skus(svc, order.id, order.lines.iter().map(|l| &l.sku)).await
}

pub(super) async fn commit_stock(svc: &OrderServices, order: &OrderRecord) -> bool {
    let committed = join_all(order.lines.iter().map(|line| async move {
        let answer = svc
            .products
            .ask(&line.sku, Commit { order_id: order.id })
            .await;
        match answer {
            Ok(Ok(CommitOutcome::Committed | CommitOutcome::AlreadyCommitted)) => true,
            Ok(Ok(CommitOutcome::NotReserved)) => {
                metrics::counter!("kassa_commit_without_reservation_total").increment(1);
                tracing::error!(order_id = %order.id, sku = %line.sku, "paid order had no reservation to commit");
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(order_id = %order.id, sku = %line.sku, error = %e, "commit failed");
                false
            }
            Err(e) => {
                tracing::warn!(order_id = %order.id, sku = %line.sku, error = %e, "commit failed");
                false
            }
        }
    }))
    .await;
    committed.into_iter().all(|ok| ok)
}

pub(super) async fn queue_email(svc: &OrderServices, order: &OrderRecord, kind: EmailKind) -> bool {
    let email = OutboxEmail::new(order, kind, svc.clock.now());
    // Queued claimed by this replica and handed to its mailer: sent now, without the
    // mailer reading the outbox, claiming the email and loading the order again.
    let handoff = svc
        .mail
        .as_ref()
        .and_then(|mail| mail.slot().map(|slot| (mail, slot)));
    let queued = match handoff {
        Some((mail, slot)) => {
            let claimed_until = mail.claim_until();
            let queued = svc.store.enqueue_claimed_email(&email, claimed_until).await;
            if let Ok(true) = queued {
                let claimed = OutboxEmail {
                    next_attempt_at: claimed_until,
                    ..email
                };
                mail.give(claimed, order.clone(), slot);
            }
            queued.map(|_| ())
        }
        None => svc.store.enqueue_email(&email).await,
    };
    match queued {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(order_id = %order.id, error = %e, kind = kind.as_str(), "could not queue an email");
            false
        }
    }
}

pub(super) async fn request_refund(svc: &OrderServices, order: &OrderRecord) -> bool {
    let payment_id = order
        .settled_payment_id
        .clone()
        .or_else(|| order.payment.as_ref().map(|p| p.payment_id.clone()));
    let Some(payment_id) = payment_id else {
        tracing::error!(order_id = %order.id, "refund requested without a payment id");
        return false;
    };
    match svc.gateway.refund(&payment_id).await {
        Ok(refund_id) => {
            tracing::info!(order_id = %order.id, %payment_id, %refund_id, "refund accepted");
            true
        }
        Err(e) => {
            tracing::warn!(order_id = %order.id, %payment_id, error = %e, "refund failed; will retry");
            false
        }
    }
}

/// Cancels the order's open payment at the gateway. A payment that already succeeded is left
/// to its success webhook (a late success: stock taken again, or a refund).
pub(super) async fn cancel_payment(
    svc: &OrderServices,
    order_id: OrderId,
    payment_id: &str,
) -> bool {
    match svc.gateway.cancel(payment_id).await {
        Ok(CancelOutcome::Cancelled) => {
            tracing::info!(%order_id, %payment_id, "payment cancelled");
            true
        }
        Ok(CancelOutcome::AlreadySucceeded) => {
            tracing::warn!(%order_id, %payment_id, "the payment succeeded before it could be cancelled; its webhook settles the order");
            true
        }
        Err(e) => {
            tracing::warn!(%order_id, %payment_id, error = %e, "payment cancel failed; will retry");
            false
        }
    }
}

/// Cancels the payment a failed initiation may have opened after all (it timed out after the
/// gateway took it). Initiating again under the order id answers that payment, or opens one
/// that is cancelled at once, before anyone has its link (so it sends the shopper back to the
/// shop's home page, not to an order page). A refusal means the gateway holds no payment it
/// would open for this order: nothing to cancel.
async fn cancel_late_payment(svc: &OrderServices, order: &OrderRecord) -> bool {
    let request =
        super::checkout::payment_request(&svc.settings, order, svc.settings.shop_url.clone(), None);
    match svc.gateway.initiate(request).await {
        Ok(session) => cancel_payment(svc, order.id, &session.payment_id).await,
        Err(GatewayError::Refused(e)) => {
            tracing::warn!(order_id = %order.id, error = %e, "the gateway refuses to name a payment for the failed order; nothing to cancel");
            true
        }
        Err(e @ GatewayError::Unavailable(_)) => {
            tracing::warn!(order_id = %order.id, error = %e, "cannot ask the gateway for a late payment yet; will retry");
            false
        }
    }
}
