//! Where actors live: a fixed pool of arbiters (one per core, keys hashed to arbiters) and a
//! registry per actor kind that starts an actor on first use and forgets it when it
//! passivates. Asking an actor never hangs: a full mailbox or a slow actor is `Overloaded`.

use actix::dev::ToEnvelope;
use actix::prelude::*;
use dashmap::DashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

/// The arbiters that run every keyed actor.
pub struct ActorPool {
    handles: Vec<ArbiterHandle>,
    /// Owned so that `shutdown` can join the threads; empty once joined.
    arbiters: std::sync::Mutex<Vec<Arbiter>>,
    hasher: std::collections::hash_map::RandomState,
}

impl ActorPool {
    /// Starts `threads` arbiters (at least one). Must be called inside an actix `System`.
    pub fn new(threads: usize) -> Self {
        let arbiters: Vec<Arbiter> = (0..threads.max(1)).map(|_| Arbiter::new()).collect();
        Self {
            handles: arbiters.iter().map(Arbiter::handle).collect(),
            arbiters: std::sync::Mutex::new(arbiters),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn arbiter_for<K: Hash>(&self, key: &K) -> ArbiterHandle {
        let slot = self.hasher.hash_one(key) as usize % self.handles.len();
        self.handles[slot].clone()
    }

    /// Stops every arbiter and waits for its thread to end, so every actor (and what it
    /// holds, such as the store) is dropped when this returns. Blocking: call it from a
    /// blocking context at shutdown.
    pub fn shutdown(&self) {
        let arbiters =
            std::mem::take(&mut *self.arbiters.lock().unwrap_or_else(|e| e.into_inner()));
        for arbiter in &arbiters {
            arbiter.stop();
        }
        for arbiter in arbiters {
            if arbiter.join().is_err() {
                tracing::error!("an actor arbiter panicked");
            }
        }
    }
}

/// An actor with one instance per key (a SKU, a cart, an order).
pub trait KeyedActor: Actor<Context = Context<Self>> {
    type Key: Clone + Eq + Hash + Send + Sync + fmt::Display + 'static;
    /// Label for metrics and logs: "product", "cart", "order".
    const KIND: &'static str;
}

/// Why an ask did not get an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The mailbox stayed full or the actor did not answer in time: shed load (503).
    #[error("actor overloaded")]
    Overloaded,
    /// The actor kept stopping before answering (its state could not be loaded).
    #[error("actor unavailable")]
    Unavailable,
}

/// An actor's entry in its registry; it leaves when the actor stops.
pub struct Membership<A: KeyedActor> {
    key: A::Key,
    live: Arc<DashMap<A::Key, Addr<A>>>,
    new: bool,
}

impl<A: KeyedActor> Membership<A> {
    pub fn key(&self) -> &A::Key {
        &self.key
    }

    /// Started by `Registry::ask_new`: the key has nothing stored, so there is nothing to load.
    pub fn is_new(&self) -> bool {
        self.new
    }

    /// Removes this actor from the registry (only if the entry is still this actor), so the
    /// next ask starts a fresh one that reloads its state from the store.
    pub fn leave(&self, me: &Addr<A>) {
        if self
            .live
            .remove_if(&self.key, |_, addr| addr == me)
            .is_some()
        {
            metrics::gauge!("kassa_actors_live", "kind" => A::KIND).decrement(1.0);
        }
    }
}

type Spawn<A> = dyn Fn(Membership<A>) -> A + Send + Sync;

pub struct Registry<A: KeyedActor> {
    live: Arc<DashMap<A::Key, Addr<A>>>,
    pool: Arc<ActorPool>,
    spawn: Arc<Spawn<A>>,
    ask_timeout: Duration,
    cap: Option<Arc<LiveCap<A>>>,
}

impl<A: KeyedActor> Clone for Registry<A> {
    fn clone(&self) -> Self {
        Self {
            live: self.live.clone(),
            pool: self.pool.clone(),
            spawn: self.spawn.clone(),
            ask_timeout: self.ask_timeout,
            cap: self.cap.clone(),
        }
    }
}

/// Keys in the order their actors started, for the cap on live actors: a second-chance FIFO
/// (an actor asked to stop that is still live goes to the back), so the oldest idle actors
/// go first and no scan of the whole map is ever needed.
struct LiveCap<A: KeyedActor> {
    max_live: usize,
    started: std::sync::Mutex<std::collections::VecDeque<A::Key>>,
    /// Sends `Evict` (a function, so that only capped registries need the handler).
    evict: fn(&Addr<A>) -> bool,
}

/// How many of the oldest actors one start over the cap asks to stop.
const EVICT_BATCH: usize = 4;

impl<A: KeyedActor> Registry<A> {
    pub fn new(
        pool: Arc<ActorPool>,
        ask_timeout: Duration,
        spawn: impl Fn(Membership<A>) -> A + Send + Sync + 'static,
    ) -> Self {
        Self {
            live: Arc::new(DashMap::new()),
            pool,
            spawn: Arc::new(spawn),
            ask_timeout,
            cap: None,
        }
    }

    /// Keeps about `max_live` actors live: each start beyond it asks the oldest few to stop
    /// if they are idle (`Evict`). Time-based passivation alone lets a scan of a million keys
    /// keep a million actors for the idle period.
    pub fn with_max_live(mut self, max_live: usize) -> Self
    where
        A: Handler<Evict>,
        A::Context: ToEnvelope<A, Evict>,
    {
        self.cap = Some(Arc::new(LiveCap {
            max_live,
            started: std::sync::Mutex::new(std::collections::VecDeque::new()),
            evict: |addr| addr.try_send(Evict).is_ok(),
        }));
        self
    }

    /// The live actor for `key`, started on its arbiter if there is none (atomic per key).
    pub fn addr(&self, key: &A::Key) -> Addr<A> {
        self.addr_or_start(key, false)
    }

    fn addr_or_start(&self, key: &A::Key, new: bool) -> Addr<A> {
        if let Some(addr) = self.live.get(key).filter(|a| a.connected()) {
            return addr.clone();
        }
        let mut started = false;
        let addr = self
            .live
            .entry(key.clone())
            .and_modify(|addr| {
                if !addr.connected() {
                    *addr = self.start(key, new);
                    started = true;
                }
            })
            .or_insert_with(|| {
                started = true;
                self.start(key, new)
            })
            .clone();
        if started {
            metrics::gauge!("kassa_actors_live", "kind" => A::KIND).increment(1.0);
            metrics::counter!("kassa_actor_activations_total", "kind" => A::KIND).increment(1);
            if let Some(cap) = &self.cap {
                self.note_start(cap, key);
            }
        }
        addr
    }

    fn start(&self, key: &A::Key, new: bool) -> Addr<A> {
        let membership = Membership {
            key: key.clone(),
            live: self.live.clone(),
            new,
        };
        let spawn = self.spawn.clone();
        A::start_in_arbiter(&self.pool.arbiter_for(key), move |_| spawn(membership))
    }

    /// Sends `msg` and waits for the answer, at most the ask timeout. A message that finds
    /// the actor stopped (passivated, or failed to load) is retried on a fresh actor, so
    /// messages must be idempotent.
    pub async fn ask<M>(&self, key: &A::Key, msg: M) -> Result<M::Result, AskError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.ask_started(key, msg, false).await
    }

    /// `ask` for a key the caller just generated (a fresh UUID), so nothing can be stored
    /// under it: the actor it starts skips loading (`Membership::is_new`). Retries after the
    /// actor stopped start it the ordinary way.
    pub async fn ask_new<M>(&self, key: &A::Key, msg: M) -> Result<M::Result, AskError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.ask_started(key, msg, true).await
    }

    /// `ask` without the ask timeout: for a message whose effect may still happen after a
    /// caller stopped waiting (a write the actor carries for the caller), so that the caller
    /// learns how it went instead of guessing. The actor must answer in bounded time.
    pub async fn ask_to_the_end<M>(&self, key: &A::Key, msg: M) -> Result<M::Result, AskError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.ask_within(key, msg, false, None).await
    }

    async fn ask_started<M>(&self, key: &A::Key, msg: M, new: bool) -> Result<M::Result, AskError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.ask_within(key, msg, new, Some(self.ask_timeout)).await
    }

    async fn ask_within<M>(
        &self,
        key: &A::Key,
        msg: M,
        new: bool,
        timeout: Option<std::time::Duration>,
    ) -> Result<M::Result, AskError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let started = std::time::Instant::now();
        for attempt in 0..3 {
            let addr = self.addr_or_start(key, new && attempt == 0);
            let sent = addr.send(msg.clone());
            let answer = match timeout {
                Some(limit) => tokio::time::timeout(limit, sent).await,
                None => Ok(sent.await),
            };
            match answer {
                Ok(Ok(answer)) => {
                    metrics::histogram!("kassa_actor_ask_seconds", "kind" => A::KIND)
                        .record(started.elapsed().as_secs_f64());
                    return Ok(answer);
                }
                Ok(Err(MailboxError::Closed)) => {
                    if self.live.remove_if(key, |_, a| a == &addr).is_some() {
                        metrics::gauge!("kassa_actors_live", "kind" => A::KIND).decrement(1.0);
                    }
                }
                Ok(Err(MailboxError::Timeout)) | Err(_) => {
                    metrics::counter!("kassa_actor_ask_overloaded_total", "kind" => A::KIND)
                        .increment(1);
                    return Err(AskError::Overloaded);
                }
            }
        }
        Err(AskError::Unavailable)
    }

    /// Sends `msg` to every live actor without waiting (housekeeping: passivation sweeps).
    pub fn broadcast<M>(&self, msg: M)
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        for entry in self.live.iter() {
            let _ = entry.value().try_send(msg.clone());
        }
    }

    fn note_start(&self, cap: &LiveCap<A>, key: &A::Key) {
        let mut started = cap.started.lock().unwrap_or_else(|e| e.into_inner());
        started.push_back(key.clone());
        if self.live.len() <= cap.max_live {
            return;
        }
        for _ in 0..EVICT_BATCH {
            let Some(oldest) = started.pop_front() else {
                break;
            };
            // Stopped already (passivated, or evicted earlier): forget it.
            let Some(addr) = self.live.get(&oldest).map(|a| a.clone()) else {
                continue;
            };
            // Evict only stops an idle actor, and the mailbox takes the message without
            // waiting; busy or not, the key goes to the back until it is found stopped.
            if (cap.evict)(&addr) {
                metrics::counter!("kassa_actor_evictions_requested_total", "kind" => A::KIND)
                    .increment(1);
            }
            started.push_back(oldest);
        }
    }

    /// How many actors of this kind are alive in this process.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    pub fn is_live(&self, key: &A::Key) -> bool {
        self.live.get(key).is_some_and(|a| a.connected())
    }
}

/// Asks every live actor to stop if it has been idle for its passivation period.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct PassivateIfIdle;

/// Asks an actor to stop if it has been idle for `ActorSettings::evict_after` and nothing
/// of its own is in flight: the registry is over its cap on live actors.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Evict;
