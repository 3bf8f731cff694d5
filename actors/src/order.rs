//! The order state machine of API.md as one transition table: (status, event) -> (new status,
//! effects). It only decides; the OrderActor persists the decision with its effects and then
//! carries them out. Every cell, the illegal ones included, has a test below.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A step that follows a transition, recorded with it and cleared once done, so a crash in
/// between is re-driven (every step is idempotent, keyed by the order id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Give the order's reserved units back on every SKU.
    ReleaseStock,
    /// Turn the order's reservations into permanent stock decrements.
    CommitStock,
    /// Unlock the cart, keeping its lines.
    UnlockCart,
    /// Empty and unlock the cart (the order was paid).
    EmptyCart,
    /// Put the confirmation email in the outbox.
    QueueEmail,
    /// Put the refund email in the outbox.
    QueueRefundEmail,
    /// Ask the gateway to refund the settled payment.
    RequestRefund,
    /// Ask the gateway to cancel the open payment (so it can no longer be paid).
    CancelPayment,
    /// Ask the gateway again for the payment of this order id (its idempotency key) and cancel
    /// it: an initiation that timed out may have opened one after all.
    CancelLatePayment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Processing,
    Failed,
    Expired,
    RefundPending,
    Refunded,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::PendingPayment,
        OrderStatus::Processing,
        OrderStatus::Failed,
        OrderStatus::Expired,
        OrderStatus::RefundPending,
        OrderStatus::Refunded,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Processing => "processing",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::RefundPending => "refund_pending",
            Self::Refunded => "refunded",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    /// The gateway says the payment settled. `amount_matches`: amount and currency equal the
    /// order's. `stock_held`: the order's units are reserved for it (always so while pending;
    /// for a failed or expired order, whether they could be reserved again).
    PaymentSucceeded {
        amount_matches: bool,
        stock_held: bool,
    },
    /// The gateway says the payment failed (declined, abandoned).
    PaymentFailed,
    /// The payment could not be initiated (gateway unreachable, failing, or silent past its
    /// deadline: it may still have opened the payment).
    GatewayUnavailable,
    /// The reservation TTL passed unpaid.
    ReservationExpired,
    /// The gateway accepted the refund of the settled payment.
    RefundAccepted,
    /// The shopper (or an admin) cancelled the unpaid order.
    CancelRequested,
}

/// What the table says to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Move {
        to: OrderStatus,
        effects: &'static [Effect],
    },
    /// The event changes nothing (a duplicate, a late failure, an event for a settled order).
    Stay,
}

const PAID: &[Effect] = &[Effect::CommitStock, Effect::EmptyCart, Effect::QueueEmail];
const RELEASED: &[Effect] = &[Effect::ReleaseStock, Effect::UnlockCart];
const REFUND_UNPAID: &[Effect] = &[
    Effect::ReleaseStock,
    Effect::UnlockCart,
    Effect::RequestRefund,
];
const REFUND: &[Effect] = &[Effect::RequestRefund];
const REFUND_RELEASING: &[Effect] = &[Effect::ReleaseStock, Effect::RequestRefund];
const REFUNDED: &[Effect] = &[Effect::QueueRefundEmail];
/// The payment was not opened in time: nothing is held, and a payment the gateway opened
/// after all is cancelled.
const UNINITIATED: &[Effect] = &[
    Effect::ReleaseStock,
    Effect::UnlockCart,
    Effect::CancelLatePayment,
];
const CANCELLED: &[Effect] = &[
    Effect::CancelPayment,
    Effect::ReleaseStock,
    Effect::UnlockCart,
];

/// The transition table.
pub fn decide(status: OrderStatus, event: OrderEvent) -> Decision {
    use Decision::{Move, Stay};
    use OrderEvent as E;
    use OrderStatus as S;
    let to = |to, effects| Move { to, effects };
    match (status, event) {
        (
            S::PendingPayment,
            E::PaymentSucceeded {
                amount_matches: true,
                ..
            },
        ) => to(S::Processing, PAID),
        (
            S::PendingPayment,
            E::PaymentSucceeded {
                amount_matches: false,
                ..
            },
        ) => to(S::RefundPending, REFUND_UNPAID),
        (S::PendingPayment, E::PaymentFailed) => to(S::Failed, RELEASED),
        (S::PendingPayment, E::GatewayUnavailable) => to(S::Failed, UNINITIATED),
        (S::PendingPayment, E::ReservationExpired) => to(S::Expired, RELEASED),
        (S::PendingPayment, E::RefundAccepted) => Stay,
        (S::PendingPayment, E::CancelRequested) => to(S::Cancelled, CANCELLED),

        (
            S::Failed | S::Expired | S::Cancelled,
            E::PaymentSucceeded {
                amount_matches: true,
                stock_held: true,
            },
        ) => to(S::Processing, PAID),
        (
            S::Failed | S::Expired | S::Cancelled,
            E::PaymentSucceeded {
                amount_matches: true,
                stock_held: false,
            },
        ) => to(S::RefundPending, REFUND),
        (
            S::Failed | S::Expired | S::Cancelled,
            E::PaymentSucceeded {
                amount_matches: false,
                stock_held: true,
            },
        ) => to(S::RefundPending, REFUND_RELEASING),
        (
            S::Failed | S::Expired | S::Cancelled,
            E::PaymentSucceeded {
                amount_matches: false,
                stock_held: false,
            },
        ) => to(S::RefundPending, REFUND),
        (
            S::Failed | S::Expired | S::Cancelled,
            E::PaymentFailed
            | E::GatewayUnavailable
            | E::ReservationExpired
            | E::RefundAccepted
            | E::CancelRequested,
        ) => Stay,

        (S::Processing, _) => Stay,
        (S::RefundPending, E::RefundAccepted) => to(S::Refunded, REFUNDED),
        (S::RefundPending, _) => Stay,
        (S::Refunded, _) => Stay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effect::*;
    use OrderStatus::*;

    const fn paid(amount_matches: bool, stock_held: bool) -> OrderEvent {
        OrderEvent::PaymentSucceeded {
            amount_matches,
            stock_held,
        }
    }

    const EVENTS: [OrderEvent; 9] = [
        paid(true, true),
        paid(true, false),
        paid(false, true),
        paid(false, false),
        OrderEvent::PaymentFailed,
        OrderEvent::GatewayUnavailable,
        OrderEvent::ReservationExpired,
        OrderEvent::RefundAccepted,
        OrderEvent::CancelRequested,
    ];

    fn moves(to: OrderStatus, effects: &'static [Effect]) -> Decision {
        Decision::Move { to, effects }
    }

    /// The whole table, written out: one row per status, one column per event (in `EVENTS`
    /// order). Any change to `decide` must change this too.
    fn expected(status: OrderStatus) -> [Decision; 9] {
        let stay = || Decision::Stay;
        match status {
            PendingPayment => [
                moves(Processing, &[CommitStock, EmptyCart, QueueEmail]),
                moves(Processing, &[CommitStock, EmptyCart, QueueEmail]),
                moves(RefundPending, &[ReleaseStock, UnlockCart, RequestRefund]),
                moves(RefundPending, &[ReleaseStock, UnlockCart, RequestRefund]),
                moves(Failed, &[ReleaseStock, UnlockCart]),
                moves(Failed, &[ReleaseStock, UnlockCart, CancelLatePayment]),
                moves(Expired, &[ReleaseStock, UnlockCart]),
                stay(),
                moves(Cancelled, &[CancelPayment, ReleaseStock, UnlockCart]),
            ],
            Failed | Expired | Cancelled => [
                moves(Processing, &[CommitStock, EmptyCart, QueueEmail]),
                moves(RefundPending, &[RequestRefund]),
                moves(RefundPending, &[ReleaseStock, RequestRefund]),
                moves(RefundPending, &[RequestRefund]),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
            ],
            Processing => [
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
            ],
            RefundPending => [
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                moves(Refunded, &[QueueRefundEmail]),
                stay(),
            ],
            Refunded => [
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
                stay(),
            ],
        }
    }

    #[test]
    fn every_cell_of_the_transition_table() {
        for status in OrderStatus::ALL {
            for (event, want) in EVENTS.iter().zip(expected(status)) {
                assert_eq!(decide(status, *event), want, "({status}, {event:?})");
            }
        }
    }

    #[test]
    fn a_failure_after_a_success_changes_nothing() {
        assert_eq!(
            decide(Processing, OrderEvent::PaymentFailed),
            Decision::Stay
        );
    }

    #[test]
    fn a_payment_not_opened_in_time_is_cancelled_if_the_gateway_opened_it_after_all() {
        let Decision::Move { to, effects } = decide(PendingPayment, OrderEvent::GatewayUnavailable)
        else {
            panic!("a failed initiation moves the order");
        };
        assert_eq!(to, Failed);
        assert!(effects.contains(&CancelLatePayment), "{effects:?}");
    }

    #[test]
    fn a_paid_order_never_expires() {
        assert_eq!(
            decide(Processing, OrderEvent::ReservationExpired),
            Decision::Stay
        );
    }

    #[test]
    fn every_move_out_of_pending_gives_the_stock_and_the_cart_back_or_sells_them() {
        for event in EVENTS {
            if let Decision::Move { effects, .. } = decide(PendingPayment, event) {
                let settles_stock =
                    effects.contains(&CommitStock) || effects.contains(&ReleaseStock);
                let settles_cart = effects.contains(&EmptyCart) || effects.contains(&UnlockCart);
                assert!(
                    settles_stock && settles_cart,
                    "{event:?} leaves stock or cart held"
                );
            }
        }
    }

    #[test]
    fn status_names_match_the_contract() {
        let names: Vec<_> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "pending_payment",
                "processing",
                "failed",
                "expired",
                "refund_pending",
                "refunded",
                "cancelled"
            ]
        );
        for s in OrderStatus::ALL {
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
        }
    }
}
