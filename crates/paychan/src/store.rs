//! The channel store: what a storage backend keeps for each channel, and how durably.
//!
//! [`Store`] is the trait the daemon, the payer client and the watchers save through. The
//! `paychan-sqlite` crate implements it on SQLite (the embedded default); a PostgreSQL backend is
//! planned beside it. A backend stores [`ChannelRecord`]s, whose channel state it writes as the
//! versioned text of [`ChannelState::encode`], so every backend reads what any other wrote.
//!
//! # Durability
//! A channel's state is money: a payee that forgets a payment loses it, and a payer that forgets
//! a checkpoint may broadcast a state the payee can beat. So, for every backend:
//! - **A save is durable when it returns `Ok`.** The record survives a crash of the process or
//!   of the machine (a power cut) from that moment on. The state machines' [`Persist`] action
//!   relies on this: nothing is sent or broadcast until the save has returned.
//! - **A batch is atomic.** [`Store::save_channels`] saves all of its records or, when it
//!   returns an error, none of them.
//! - **A failed call changes nothing** that a later read would see.
//! - **Key indexes are never handed out twice** ([`Store::reserve_key_index`]), even across
//!   crashes, and even if the channel they were for is never saved.
//!
//! The test kit (`paychan-testkit`, `store::check_contract`) checks what of this a test can see
//! from outside; every backend runs it.
//!
//! [`Persist`]: crate::channel::PayerAction::Persist

use bitcoin::Network;
use serde::{Deserialize, Serialize};

use crate::channel::{ChannelTerms, FundedChannel, PayeeStage, PayeeState, PayerStage, PayerState};
use crate::closing::Closure;
use crate::funding::FundingScript;
use crate::watch::BlockId;
use crate::wire::ChannelId;

/// The version of the channel state encoding that [`ChannelState::encode`] writes. States
/// written before the version was recorded read as version 0.
pub const STATE_VERSION: u32 = 1;

/// The version of a stored channel's row in a store several processes write
/// ([`Store::save_channels_if`]): one more at each save.
pub type RowVersion = i64;

/// What a store writes for its `network` setting, given what it holds (`None`: nothing yet):
/// the value to record on first use, or nothing. For backends that keep settings as text;
/// `location` names the store in errors.
///
/// # Errors
/// [`StoreError::WrongNetwork`], [`StoreError::Corrupt`].
pub fn network_setting(
    stored: Option<&str>,
    network: Network,
    location: &str,
) -> Result<Option<String>, StoreError> {
    let Some(s) = stored else { return Ok(Some(network.to_core_arg().into())) };
    let stored = Network::from_core_arg(s).map_err(|e| StoreError::Corrupt {
        location: location.to_owned(),
        reason: format!("network {s:?}: {e}"),
    })?;
    if stored != network {
        return Err(StoreError::WrongNetwork { stored, requested: network });
    }
    Ok(None)
}

/// The key index to hand out given the stored counter (`None`: none yet), and the counter to
/// store after it. For backends that keep settings as text.
///
/// # Errors
/// The reason the counter is corrupt or exhausted (the caller adds where).
pub fn next_key_index(stored: Option<&str>) -> Result<(u32, String), String> {
    let index = match stored {
        None => 0,
        Some(s) => s.parse::<u32>().map_err(|e| format!("next_key_index {s:?}: {e}"))?,
    };
    let bumped = index
        .checked_add(1)
        .filter(|i| *i < 1 << 31)
        .ok_or_else(|| "channel key indexes exhausted".to_owned())?;
    Ok((index, bumped.to_string()))
}

/// A lease taken with [`Store::try_lead`]: held until dropped.
pub type Lease = Box<dyn Send>;

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (an I/O or database error).
    #[error("store {location}: {source}")]
    Backend {
        /// Where the store is (a file, a database URL without its password).
        location: String,
        /// The cause, as the backend reported it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store was written by a newer paychan.
    #[error("store {location} has schema version {found}; this build knows up to {supported}")]
    NewerSchema {
        /// Where the store is.
        location: String,
        /// Its schema version.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
    /// The data belongs to another chain.
    #[error("this data directory is for {stored}, not {requested}")]
    WrongNetwork {
        /// The network it was created for.
        stored: Network,
        /// The network asked for.
        requested: Network,
    },
    /// The channel id is already used in this store by a channel of the other role: ids are
    /// unique across roles, so that one side's channel is never saved over the other's.
    #[error("channel id {id} is already used here by a {role} channel")]
    IdInUse {
        /// The id.
        id: ChannelId,
        /// The role of the channel that has it.
        role: &'static str,
    },
    /// Another process saved the channel since this one read it (a store several front ends
    /// share): nothing was written; read it again.
    #[error("channel {id} was saved by another front end since it was read here")]
    Stale {
        /// The channel.
        id: ChannelId,
    },
    /// The thread or task that writes for a daemon has stopped: nothing more can be saved.
    #[error("the store's writer thread has stopped")]
    WriterStopped,
    /// A stored value does not parse.
    #[error("store {location} is corrupt: {reason}")]
    Corrupt {
        /// Where the store is.
        location: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where channels are kept. See the [module docs](self) for the durability every
/// implementation guarantees.
pub trait Store {
    /// Checks that the store is for `network`, recording it on first use.
    ///
    /// # Errors
    /// [`StoreError::WrongNetwork`] if it was created for another network, or a backend error.
    fn check_network(&mut self, network: Network) -> Result<(), StoreError>;

    /// Hands out the next channel key index, durably: an index is never handed out twice.
    ///
    /// # Errors
    /// A backend error, or [`StoreError::Corrupt`] (all 2^31 indexes used).
    fn reserve_key_index(&mut self) -> Result<u32, StoreError>;

    /// Saves several channels (insert or update) atomically and durably: when this returns
    /// `Ok` all are on disk, and when it returns an error none is saved. A record without a
    /// closure never erases a closure already stored.
    ///
    /// # Errors
    /// [`StoreError::IdInUse`] if a record's id belongs to a stored channel of the other role;
    /// a backend error.
    fn save_channels(&mut self, records: &[ChannelRecord]) -> Result<(), StoreError>;

    /// Saves one channel, as [`Store::save_channels`].
    ///
    /// # Errors
    /// A backend error.
    fn save_channel(&mut self, record: &ChannelRecord) -> Result<(), StoreError> {
        self.save_channels(std::slice::from_ref(record))
    }

    /// Whether several processes write this store at once (payee front ends sharing one
    /// database): a process's copy of a channel may then be stale, and its saves are
    /// compare-and-swaps ([`Store::save_channels_if`]).
    fn shared(&self) -> bool {
        false
    }

    /// Saves `records` in one transaction, as [`Store::save_channels`], each only if its stored
    /// row is still at the version given (`None`: only if it is not stored yet). Returns each
    /// one's new version, or `None` where the row changed since: nothing of that record is
    /// written, the others are.
    ///
    /// A store with one writer (SQLite, which the data directory's lock keeps to one process)
    /// has no versions: it saves every record and reports version 0.
    ///
    /// # Errors
    /// As [`Store::save_channels`]; then none is saved.
    fn save_channels_if(
        &mut self,
        records: &[(ChannelRecord, Option<RowVersion>)],
    ) -> Result<Vec<Option<RowVersion>>, StoreError> {
        let plain: Vec<ChannelRecord> = records.iter().map(|(r, _)| r.clone()).collect();
        self.save_channels(&plain)?;
        Ok(vec![Some(0); records.len()])
    }

    /// Returns channel `id` and its row's version (0 in a store with one writer), if stored.
    ///
    /// # Errors
    /// As [`Store::channel`].
    fn channel_versioned(
        &self,
        id: ChannelId,
    ) -> Result<Option<(ChannelRecord, RowVersion)>, StoreError> {
        Ok(self.channel(id)?.map(|r| (r, 0)))
    }

    /// Takes the lease named `name` if no other process holds it (a store several front ends
    /// share: the chain watcher runs in one of them), for as long as the returned value lives;
    /// `None` if another holds it. A store with one writer always grants it.
    ///
    /// # Errors
    /// A backend error.
    fn try_lead(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let _ = name;
        Ok(Some(Box::new(())))
    }

    /// Returns every channel and its row's version, oldest first.
    ///
    /// # Errors
    /// As [`Store::channels`].
    fn channels_versioned(&self) -> Result<Vec<(ChannelRecord, RowVersion)>, StoreError> {
        Ok(self.channels()?.into_iter().map(|r| (r, 0)).collect())
    }

    /// Records the transaction that closed channel `id` on chain, durably, leaving its state as
    /// it is (a watcher may run next to the command that writes the state).
    ///
    /// # Errors
    /// A backend error.
    fn record_closure(&mut self, id: ChannelId, closure: &Closure) -> Result<(), StoreError>;

    /// Forgets the closing transaction recorded for channel `id`: a reorganization took it out
    /// of the best chain, and the channel is watched again.
    ///
    /// # Errors
    /// A backend error.
    fn forget_closure(&mut self, id: ChannelId) -> Result<(), StoreError>;

    /// Records the height of the block holding channel `id`'s funding, as a watcher saw it in
    /// the best chain (`None`: unconfirmed again after a reorganization), leaving the rest of
    /// the record as it is.
    ///
    /// # Errors
    /// A backend error.
    fn record_funding_height(
        &mut self,
        id: ChannelId,
        height: Option<u32>,
    ) -> Result<(), StoreError>;

    /// Returns where the watcher called `watcher` stopped following the chain: the newest
    /// blocks it processed, oldest first (empty if it never ran).
    ///
    /// # Errors
    /// A backend error, or [`StoreError::Corrupt`].
    fn chain_position(&self, watcher: &str) -> Result<Vec<BlockId>, StoreError>;

    /// Records, durably, the newest blocks the watcher called `watcher` processed, oldest
    /// first. A watcher records them after saving what those blocks did to its channels, so a
    /// crash in between replays the blocks rather than losing what they did.
    ///
    /// # Errors
    /// A backend error.
    fn save_chain_position(&mut self, watcher: &str, blocks: &[BlockId]) -> Result<(), StoreError>;

    /// Deletes the channel `id` (one that never got a funding: nothing is at stake in it).
    ///
    /// # Errors
    /// A backend error.
    fn delete_channel(&mut self, id: ChannelId) -> Result<(), StoreError>;

    /// Returns the channel `id`, if stored.
    ///
    /// # Errors
    /// A backend error, or [`StoreError::Corrupt`].
    fn channel(&self, id: ChannelId) -> Result<Option<ChannelRecord>, StoreError>;

    /// Returns every channel, oldest first.
    ///
    /// # Errors
    /// A backend error, or [`StoreError::Corrupt`].
    fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError>;
}

/// A stored channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// The index of its key (the wallet derives the channel key from it).
    pub key_index: u32,
    /// The payee, as `PUBKEY@HOST:PORT` (payer side only).
    pub peer: Option<String>,
    /// The state machine's state.
    pub state: ChannelState,
    /// The confirmed transaction that spent the funding, once a watcher saw it. Saving a record
    /// without one never erases one already stored.
    pub closed: Option<Closure>,
    /// The height of the block holding the funding, as a watcher recorded it
    /// ([`Store::record_funding_height`]). Saving a record never changes the one stored.
    pub funding_height: Option<u32>,
    /// What a service sold over the channel keeps with it (payee side; the file service's sale),
    /// saved with every state. The store keeps it as it is.
    pub service: Option<serde_json::Value>,
}

impl ChannelRecord {
    /// The record of a payer's channel with `peer` in state `state`, its key at `key_index`:
    /// what a payer saves at each step (nothing closed or recorded by a watcher yet, which
    /// saving never erases anyway).
    pub fn payer(key_index: u32, peer: String, state: PayerState) -> ChannelRecord {
        ChannelRecord {
            key_index,
            peer: Some(peer),
            state: ChannelState::Payer(state),
            closed: None,
            funding_height: None,
            service: None,
        }
    }
}

/// A channel's side and state machine state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per channel
pub enum ChannelState {
    /// We pay.
    Payer(PayerState),
    /// We are paid.
    Payee(PayeeState),
}

/// Why a stored channel state could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateDecodeError {
    /// The role is neither `payer` nor `payee`.
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    /// The state was written by a newer paychan.
    #[error("{role} channel state has version {found}; this build reads up to {supported}")]
    NewerVersion {
        /// The role.
        role: &'static str,
        /// Its version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The text does not parse as a state.
    #[error("{role} channel state: {source}")]
    Malformed {
        /// The role.
        role: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The encoding: the state under its version number.
#[derive(Serialize)]
struct VersionedRef<'a, T> {
    version: u32,
    state: &'a T,
}

impl ChannelState {
    /// Returns the funding output's script, once both keys are known (the payee has
    /// accepted): its descriptor, `wsh(multi(2,payer,payee))`, lets any wallet watch it.
    pub fn funding_script(&self) -> Option<FundingScript> {
        let (payer_key, payee_key) = match self {
            ChannelState::Payer(s) => (s.terms.payer_key, s.payee_key()?),
            ChannelState::Payee(s) => (s.terms.payer_key, s.payee_key),
        };
        FundingScript::new(payer_key, payee_key).ok()
    }

    /// Returns `"payer"` or `"payee"`.
    pub fn role(&self) -> &'static str {
        match self {
            ChannelState::Payer(_) => "payer",
            ChannelState::Payee(_) => "payee",
        }
    }

    /// Returns the channel id.
    pub fn channel_id(&self) -> ChannelId {
        self.terms().channel_id
    }

    /// Returns what the payer proposed.
    pub fn terms(&self) -> &ChannelTerms {
        match self {
            ChannelState::Payer(s) => &s.terms,
            ChannelState::Payee(s) => &s.terms,
        }
    }

    /// Returns the stage in words ([`PayerStage::name`], [`PayeeStage::name`]).
    pub fn stage_name(&self) -> &'static str {
        match self {
            ChannelState::Payer(s) => s.stage.name(),
            ChannelState::Payee(s) => s.stage.name(),
        }
    }

    /// Returns this side's safety margin in blocks.
    pub fn margin(&self) -> u32 {
        match self {
            ChannelState::Payer(s) => s.margin,
            ChannelState::Payee(s) => s.margin,
        }
    }

    /// Returns what both sides hold once the refund is signed.
    pub fn funded(&self) -> Option<&FundedChannel> {
        match self {
            ChannelState::Payer(PayerState { stage: PayerStage::Funded(f), .. }) => Some(&f.funded),
            ChannelState::Payee(PayeeState { stage: PayeeStage::Funded(f), .. }) => Some(f),
            _ => None,
        }
    }

    /// Encodes the state for a store: JSON, `{"version": STATE_VERSION, "state": {...}}`. The
    /// role is stored beside it ([`ChannelState::role`]).
    pub fn encode(&self) -> String {
        let json = match self {
            ChannelState::Payer(state) => {
                serde_json::to_string(&VersionedRef { version: STATE_VERSION, state })
            }
            ChannelState::Payee(state) => {
                serde_json::to_string(&VersionedRef { version: STATE_VERSION, state })
            }
        };
        json.expect("channel states hold only JSON-representable values")
    }

    /// Decodes a state that [`ChannelState::encode`] wrote for `role`, of any version up to
    /// [`STATE_VERSION`], including those written before the version was recorded (the bare
    /// state, version 0).
    ///
    /// # Errors
    /// [`StateDecodeError`]: an unknown role, a newer version, or text that does not parse.
    pub fn decode(role: &str, text: &str) -> Result<ChannelState, StateDecodeError> {
        match role {
            "payer" => decode_versioned("payer", text).map(ChannelState::Payer),
            "payee" => decode_versioned("payee", text).map(ChannelState::Payee),
            other => Err(StateDecodeError::UnknownRole(other.to_owned())),
        }
    }
}

fn decode_versioned<T: serde::de::DeserializeOwned>(
    role: &'static str,
    text: &str,
) -> Result<T, StateDecodeError> {
    #[derive(Deserialize)]
    struct Version {
        version: Option<u32>,
    }
    #[derive(Deserialize)]
    struct Versioned<T> {
        state: T,
    }
    let malformed = |source| StateDecodeError::Malformed { role, source };
    // Version 0 states are bare: they hold no `version` field of their own.
    match serde_json::from_str::<Version>(text).map_err(malformed)?.version {
        None => serde_json::from_str(text).map_err(malformed),
        Some(found) if found > STATE_VERSION => {
            Err(StateDecodeError::NewerVersion { role, found, supported: STATE_VERSION })
        }
        Some(_) => Ok(serde_json::from_str::<Versioned<T>>(text).map_err(malformed)?.state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{CheckpointPolicy, Payer, PayerConfig};
    use crate::keys::ChannelSigner;
    use bitcoin::{Address, Amount, CompressedPublicKey};

    fn payer_state() -> ChannelState {
        let signer = ChannelSigner::from_slice(&[1; 32]).unwrap();
        let key = CompressedPublicKey(signer.public_key().inner);
        let config = PayerConfig {
            network: Network::Regtest,
            capacity: Amount::from_sat(100_000),
            feerate_sat_per_vb: 2,
            refund_locktime: 1_000,
            step: 2,
            margin: 6,
            payout: Address::p2wpkh(&key, Network::Regtest),
            checkpoints: CheckpointPolicy::on_request(),
        };
        let (payer, _) = Payer::open(config, signer, ChannelId([3; 32]), 500).unwrap();
        ChannelState::Payer(payer.state().clone())
    }

    #[test]
    fn a_state_is_stored_under_its_version_and_reads_back() {
        let state = payer_state();
        let text = state.encode();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["version"], STATE_VERSION);
        assert!(json["state"].is_object());
        assert_eq!(ChannelState::decode("payer", &text).unwrap(), state);
    }

    #[test]
    fn a_state_from_before_versions_reads_as_version_0() {
        let state = payer_state();
        let ChannelState::Payer(inner) = &state else { panic!("made as a payer") };
        let bare = serde_json::to_string(inner).unwrap();
        assert_eq!(ChannelState::decode("payer", &bare).unwrap(), state);
    }

    #[test]
    fn a_newer_version_an_unknown_role_and_garbage_are_refused() {
        let text = payer_state().encode();
        let newer = text.replacen(
            &format!("\"version\":{STATE_VERSION}"),
            &format!("\"version\":{}", STATE_VERSION + 1),
            1,
        );
        assert!(matches!(
            ChannelState::decode("payer", &newer),
            Err(StateDecodeError::NewerVersion { role: "payer", .. })
        ));
        assert!(matches!(
            ChannelState::decode("watcher", &text),
            Err(StateDecodeError::UnknownRole(_))
        ));
        // A payer's state is not a payee's.
        assert!(ChannelState::decode("payee", &text).is_err());
        assert!(ChannelState::decode("payer", "{").is_err());
    }
}
