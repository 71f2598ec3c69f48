//! The [`Store`] contract as tests any backend runs: [`check_contract`] takes a function that
//! opens one of the backend's stores by name (empty the first time, the same one after), and
//! checks what the trait's docs promise that a test can see from outside: records read back as
//! saved, across a reopen; a batch saved whole; a closure never erased by a later save (only
//! forgotten on purpose); a service's record kept; a funding height kept apart from saves; each
//! watcher's chain position; deletes; key indexes never handed out twice, across a reopen; the
//! network fixed at first use; an id never shared by a payer and a payee channel. (That a save
//! survives a power cut is the backend's own test to make.)

use bitcoin::{Amount, Network};
use paychan::channel::Payer;
use paychan::closing::{ClosingKind, Closure};
use paychan::store::{ChannelRecord, ChannelState, Store, StoreError};
use paychan::watch::BlockId;
use paychan::wire::ChannelId;

use crate::{payer_config, signer, TIP};

/// Runs every check of the contract on the stores that `open` opens. `open(name)` opens the
/// store called `name`: empty the first time, as it was left the next times (each check uses
/// names of its own).
pub fn check_contract<S: Store>(mut open: impl FnMut(&str) -> S) {
    records_read_back_across_a_reopen(&mut open);
    a_closure_is_never_erased_by_a_save(&mut open);
    a_service_record_is_kept(&mut open);
    a_deleted_channel_is_gone(&mut open);
    key_indexes_are_never_handed_out_twice(&mut open);
    the_network_is_fixed_at_first_use(&mut open);
    an_id_is_never_shared_by_the_two_roles(&mut open);
    a_funding_height_is_kept_apart_from_saves(&mut open);
    chain_positions_read_back_per_watcher(&mut open);
}

/// A payer channel's record with key index `key_index` (its id is `[key_index; 32]`).
pub fn payer_record(key_index: u32) -> ChannelRecord {
    let config = payer_config(Amount::from_sat(100_000));
    let id = ChannelId([key_index as u8; 32]);
    let (payer, _) = Payer::open(config, signer(key_index as u8 + 1), id, TIP).expect("terms");
    ChannelRecord {
        key_index,
        peer: Some("peer".into()),
        state: ChannelState::Payer(payer.state().clone()),
        closed: None,
        funding_height: None,
        service: None,
    }
}

fn records_read_back_across_a_reopen<S: Store>(open: &mut impl FnMut(&str) -> S) {
    let mut store = open("round_trip");
    let (a, b) = (payer_record(0), payer_record(1));
    store.save_channels(&[a.clone(), b.clone()]).expect("a batch saves");
    let mut a2 = a.clone();
    a2.peer = Some("moved".into());
    store.save_channel(&a2).expect("an update saves");
    drop(store);
    let store = open("round_trip");
    assert_eq!(store.channels().unwrap(), vec![a2.clone(), b], "oldest first, newest state");
    assert_eq!(store.channel(a.state.channel_id()).unwrap(), Some(a2));
    assert_eq!(store.channel(ChannelId([9; 32])).unwrap(), None);
}

fn a_closure_is_never_erased_by_a_save<S: Store>(open: &mut impl FnMut(&str) -> S) {
    let mut store = open("closure");
    let record = payer_record(0);
    let id = record.state.channel_id();
    store.save_channel(&record).unwrap();
    let closure = Closure {
        txid: "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b".parse().unwrap(),
        kind: ClosingKind::Commitment { rung: 3 },
        height: 812,
        payer_amount: Amount::from_sat(60_000),
        payee_amount: Amount::from_sat(39_000),
    };
    store.record_closure(id, &closure).unwrap();
    store.save_channel(&record).unwrap();
    assert_eq!(store.channel(id).unwrap().unwrap().closed, Some(closure));
    // A reorganization took it away: forgotten, and the state stays.
    store.forget_closure(id).unwrap();
    assert_eq!(store.channel(id).unwrap(), Some(record));
}

fn a_service_record_is_kept<S: Store>(open: &mut impl FnMut(&str) -> S) {
    let mut store = open("service");
    let mut record = payer_record(0);
    record.service = Some(serde_json::json!({ "name": "film.bin", "paid_chunks": 7 }));
    store.save_channel(&record).unwrap();
    drop(store);
    let store = open("service");
    assert_eq!(store.channel(record.state.channel_id()).unwrap(), Some(record));
}

fn a_deleted_channel_is_gone<S: Store>(open: &mut impl FnMut(&str) -> S) {
    let mut store = open("delete");
    let (a, b) = (payer_record(0), payer_record(1));
    store.save_channels(&[a.clone(), b.clone()]).unwrap();
    store.delete_channel(a.state.channel_id()).unwrap();
    assert_eq!(store.channels().unwrap(), vec![b]);
}

fn key_indexes_are_never_handed_out_twice<S: Store>(open: &mut impl FnMut(&str) -> S) {
    let mut store = open("key_indexes");
    assert_eq!(store.reserve_key_index().unwrap(), 0);
    assert_eq!(store.reserve_key_index().unwrap(), 1);
    drop(store);
    assert_eq!(open("key_indexes").reserve_key_index().unwrap(), 2);
}

fn an_id_is_never_shared_by_the_two_roles<S: Store>(open: &mut impl FnMut(&str) -> S) {
    let mut store = open("roles");
    // The test kit's payee channel has the id [7; 32], as the payer record with key index 7.
    let (opening, _) = crate::Opening::proposed(payer_config(Amount::from_sat(100_000)));
    let payee = ChannelRecord {
        key_index: 8,
        peer: None,
        state: ChannelState::Payee(opening.payee.state().clone()),
        closed: None,
        funding_height: None,
        service: None,
    };
    let payer = payer_record(7);
    assert_eq!(payer.state.channel_id(), payee.state.channel_id());
    store.save_channel(&payer).unwrap();
    let err = store.save_channels(&[payer_record(1), payee]).unwrap_err();
    assert!(matches!(err, StoreError::IdInUse { role: "payer", .. }), "{err}");
    // Nothing of the batch is saved, and the payer's channel is as it was.
    assert_eq!(store.channels().unwrap(), vec![payer]);
}

fn the_network_is_fixed_at_first_use<S: Store>(open: &mut impl FnMut(&str) -> S) {
    let mut store = open("network");
    store.check_network(Network::Regtest).unwrap();
    store.check_network(Network::Regtest).unwrap();
    let err = store.check_network(Network::Bitcoin).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongNetwork { stored: Network::Regtest, requested: Network::Bitcoin }
        ),
        "{err}"
    );
}

fn a_funding_height_is_kept_apart_from_saves<S: Store>(open: &mut impl FnMut(&str) -> S) {
    let mut store = open("funding_height");
    let record = payer_record(0);
    let id = record.state.channel_id();
    store.save_channel(&record).unwrap();
    store.record_funding_height(id, Some(431)).unwrap();
    // A save (the state machine's, which knows no height) leaves it.
    store.save_channel(&record).unwrap();
    drop(store);
    let mut store = open("funding_height");
    assert_eq!(store.channel(id).unwrap().unwrap().funding_height, Some(431));
    // A reorganization took the funding's block away.
    store.record_funding_height(id, None).unwrap();
    assert_eq!(store.channel(id).unwrap(), Some(record));
}

fn chain_positions_read_back_per_watcher<S: Store>(open: &mut impl FnMut(&str) -> S) {
    use bitcoin::hashes::Hash;
    let mut store = open("positions");
    assert_eq!(store.chain_position("payee").unwrap(), vec![]);
    let block = |height: u32| BlockId {
        height,
        hash: bitcoin::BlockHash::from_byte_array([height as u8; 32]),
    };
    store.save_chain_position("payee", &[block(1), block(2)]).unwrap();
    store.save_chain_position("payer", &[block(5)]).unwrap();
    store.save_chain_position("payee", &[block(2), block(3)]).unwrap();
    drop(store);
    let store = open("positions");
    assert_eq!(store.chain_position("payee").unwrap(), vec![block(2), block(3)]);
    assert_eq!(store.chain_position("payer").unwrap(), vec![block(5)]);
}
