//! A payer's channel restored from its data directory by hand, for payments the command line
//! would never make: two of the same number, a wrong amount, a replay.

use std::collections::HashMap;

use bitcoin::{Amount, Network};
use paychan::channel::{Payer, PayerAction};
use paychan::store::{ChannelState, Store};
use paychan::wire::{ChannelId, Message, Pay};
use paychan_http::headers;
use paychan_sqlite::{SqliteStore, STORE_FILE};
use paychan_wallet::Wallet;

use super::cli::Party;

/// The payer side of channel `id`, restored from its data directory: for payments the client
/// would never make.
pub struct Hand {
    pub payer: Payer,
    key_index: u32,
    peer: Option<String>,
    store: SqliteStore,
}

impl Hand {
    pub fn load(party: &Party, id: ChannelId) -> Hand {
        let dir = party.datadir();
        let store = SqliteStore::open(&dir.join(STORE_FILE)).unwrap();
        let record = store.channel(id).unwrap().expect("the channel");
        let ChannelState::Payer(state) = record.state else { panic!("not a payer channel") };
        let wallet = Wallet::open(dir, &dir.join(STORE_FILE), Network::Regtest).unwrap();
        let signer = wallet.channel_signer(record.key_index).unwrap();
        let payer = Payer::restore(signer, state).unwrap();
        Hand { payer, key_index: record.key_index, peer: record.peer, store }
    }

    /// A new payment of `sat`, signed (kept in memory until [`Hand::save`]).
    pub fn pay(&mut self, sat: u64, tip: u32) -> Pay {
        let actions = self.payer.pay(Amount::from_sat(sat), tip).expect("a payment");
        actions
            .into_iter()
            .find_map(|a| match a {
                PayerAction::Send(Message::Pay(p)) => Some(p),
                _ => None,
            })
            .expect("a pay message")
    }

    /// Takes the acknowledgements of a response.
    pub fn acked(&mut self, headers: &HashMap<String, String>) {
        let value = headers.get("paychan-ack").expect("an ack");
        for ack in headers::decode_acks(&value.parse().unwrap()).unwrap() {
            self.payer.handle_message(&Message::PayAck(ack)).expect("the ack");
        }
    }

    /// Forgets a payment the gateway refused.
    pub fn refused(&mut self) {
        self.payer.abandon_pending().expect("a payment in flight");
    }

    pub fn save(mut self) {
        let (peer, state) = (self.peer.clone().expect("a peer"), self.payer.state().clone());
        let record = paychan::store::ChannelRecord::payer(self.key_index, peer, state);
        self.store.save_channel(&record).unwrap();
    }
}
