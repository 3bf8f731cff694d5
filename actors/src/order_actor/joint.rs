//! A transition written in one transaction with the stock it commits or releases, on a store
//! that `writes_settlements` (the embedded one: this process is its only writer). The order's
//! next version rides on its first SKU's commit or release (`CommitSettling`,
//! `ReleaseSettling`), with the cart's next version, which
//! the cart actor lends to it (`LendEndCheckout`), and the email it queues, already claimed by
//! this replica's mailer. A paid webhook is then one durable write instead of five (the
//! transition; the stock, the cart and the email; the record of the finished effects), and the
//! order never has effects left to re-drive after a crash. What cannot ride (the other SKUs of
//! a multi-SKU order, a cart the lend did not reach) stays a pending effect, run as usual.

use super::effects::end_checkout;
use super::{OrderError, Services};
use crate::ActorError;
use crate::cart::{CartLend, LendEndCheckout, LendOutcome, LentCart};
use crate::mailer::HandoffSlot;
use crate::order::Effect;
use crate::product::{CommitOutcome, CommitSettling, ReleaseOutcome, ReleaseSettling};
use crate::store::{EmailKind, OrderRecord, OutboxEmail, Settlement};

/// How a transition written with its stock went.
pub(super) enum Joint {
    /// Durable, with what rode along; `pending_effects` holds only what did not.
    Written(OrderRecord),
    /// The SKU's actor wrote nothing of it (the commit changed nothing): write it as usual.
    NotCarried,
    /// Not written (the answer is the stored order), or not known to be.
    Failed(OrderRecord, OrderError),
}

/// Whether `next` (the order after a transition) can be written with its stock: on a store
/// that writes settlements, when the transition commits or releases stock.
pub(super) fn applies(svc: &Services, order: &OrderRecord, next: &OrderRecord) -> bool {
    // Effects an earlier transition left unfinished run first, as effects: one of them may be
    // the opposite stock effect (a release that failed, before a late payment's commit).
    svc.store.writes_settlements()
        && order.pending_effects.is_empty()
        && !next.lines.is_empty()
        && stock_effect(next).is_some()
}

fn stock_effect(next: &OrderRecord) -> Option<Effect> {
    next.pending_effects
        .iter()
        .copied()
        .find(|e| matches!(e, Effect::CommitStock | Effect::ReleaseStock))
}

/// Writes `next`, the version after `order` with every effect of its transition pending, in
/// the transaction of its first SKU's commit or release.
pub(super) async fn write_with_stock(
    svc: &Services,
    order: &OrderRecord,
    mut next: OrderRecord,
) -> Joint {
    let Some(stock) = stock_effect(&next) else {
        return Joint::NotCarried;
    };
    next.version = order.version + 1;
    let carrier = next.lines[0].sku.clone();
    if next.lines.iter().all(|line| line.sku == carrier) {
        next.pending_effects.retain(|e| *e != stock);
    }
    let lent = borrow_cart(svc, &mut next).await;
    let email = queue_email(svc, &mut next);
    let settlement = Settlement {
        order: next.clone(),
        expected_version: order.version,
        cart: lent.as_ref().map(|lent| lent.write.clone()),
        email: email.as_ref().map(|(email, _)| email.clone()),
    };
    let (order_id, settlement) = (order.id, Box::new(settlement));
    let answer = match stock {
        Effect::CommitStock => svc
            .products
            .ask_to_the_end(
                &carrier,
                CommitSettling {
                    order_id,
                    settlement,
                },
            )
            .await
            .map(|a| a.map(|outcome| outcome == CommitOutcome::Committed)),
        _ => svc
            .products
            .ask_to_the_end(
                &carrier,
                ReleaseSettling {
                    order_id,
                    settlement,
                },
            )
            .await
            .map(|a| a.map(|outcome| outcome == ReleaseOutcome::Released)),
    };
    let (outcome, joint) = match answer {
        Ok(Ok(true)) => (LendOutcome::Written, Joint::Written(next)),
        Ok(Ok(false)) => (LendOutcome::NotWritten, Joint::NotCarried),
        Ok(Err(e)) => (
            LendOutcome::Unknown,
            unknown(svc, order, next, e.into()).await,
        ),
        Err(e) => (
            LendOutcome::Unknown,
            unknown(svc, order, next, e.into()).await,
        ),
    };
    let written = matches!(joint, Joint::Written(_));
    if let Some(lent) = lent {
        let outcome = if written {
            LendOutcome::Written
        } else {
            outcome
        };
        let _ = lent.outcome.send(outcome);
    }
    if let (Joint::Written(next), Some((email, Some((mail, slot))))) = (&joint, email) {
        mail.give(email, next.clone(), slot);
    }
    joint
}

/// Asks the cart for its end of the order (unlocked, and emptied of what was paid) as a lent
/// write. The cart effect leaves `pending_effects` when the cart lent it or needed no write.
async fn borrow_cart(svc: &Services, next: &mut OrderRecord) -> Option<LentCart> {
    let effect = next
        .pending_effects
        .iter()
        .copied()
        .find(|e| matches!(e, Effect::EmptyCart | Effect::UnlockCart))?;
    let (lend, lent) = CartLend::new();
    let end = LendEndCheckout {
        end: end_checkout(next, effect == Effect::EmptyCart),
        lend,
    };
    let ask = svc.carts.ask(&next.cart_id, end);
    tokio::pin!(ask, lent);
    let (lent, done) = tokio::select! {
        lent = &mut lent => match lent {
            Ok(lent) => (Some(lent), true),
            // Answered without lending: nothing to write, or it wrote itself.
            Err(_) => (None, matches!(ask.await, Ok(Ok(())))),
        },
        done = &mut ask => (None, matches!(done, Ok(Ok(())))),
    };
    if done {
        next.pending_effects.retain(|e| *e != effect);
    }
    lent
}

/// The email the transition queues, claimed by this replica's mailer when it has room (the
/// outbox's readers send it otherwise); its effect leaves `pending_effects`.
fn queue_email<'a>(
    svc: &'a Services,
    next: &mut OrderRecord,
) -> Option<(
    OutboxEmail,
    Option<(&'a crate::mailer::Handoff, HandoffSlot)>,
)> {
    let (effect, kind) = next.pending_effects.iter().find_map(|e| match e {
        Effect::QueueEmail => Some((*e, EmailKind::Confirmation)),
        Effect::QueueRefundEmail => Some((*e, EmailKind::Refund)),
        _ => None,
    })?;
    next.pending_effects.retain(|e| *e != effect);
    let mut email = OutboxEmail::new(next, kind, svc.clock.now());
    let handoff = svc
        .mail
        .as_ref()
        .and_then(|mail| mail.slot().map(|slot| (mail, slot)));
    if let Some((mail, _)) = &handoff {
        email.next_attempt_at = mail.claim_until();
    }
    Some((email, handoff))
}

/// The SKU's actor answered an error: its write failed (a failed commit may still have become
/// durable) or the message found no actor. The stored order tells whether it applied.
async fn unknown(
    svc: &Services,
    order: &OrderRecord,
    next: OrderRecord,
    error: OrderError,
) -> Joint {
    match svc.store.load_order(order.id).await {
        Ok(Some(stored)) if stored.version == next.version => Joint::Written(next),
        Ok(Some(stored)) => Joint::Failed(stored, error),
        // Never stored (a checkout's failed order): nothing of it was written.
        Ok(None) => Joint::Failed(order.clone(), error),
        Err(e) => {
            tracing::error!(order_id = %order.id, error = %e, "cannot tell whether a transition written with its stock applied");
            Joint::Failed(order.clone(), ActorError::Unavailable.into())
        }
    }
}
